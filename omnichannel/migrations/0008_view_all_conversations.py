from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("omnichannel", "0007_lifecycle"),
    ]

    operations = [
        migrations.AlterModelOptions(
            name="conversation",
            options={
                "ordering": ["-last_message_at", "-id"],
                "permissions": [("view_all_conversations", "See every conversation")],
            },
        ),
    ]
