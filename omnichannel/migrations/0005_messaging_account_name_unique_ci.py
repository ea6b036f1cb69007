"""Messaging account names unique without regard to case.

Accounts whose names differ only in case could exist before this: the oldest of each such group keeps
its name, the others get " (2)", " (3)"... (the first number free without regard to case), oldest
first, so that the constraint can be added and the same data always gets the same names."""

from django.db import migrations, models
from django.db.models import Count, Value
from django.db.models.functions import Lower

NAME_MAX_LENGTH = 100


def rename_names_equal_but_for_case(apps, schema_editor):
    MessagingAccount = apps.get_model("omnichannel", "MessagingAccount")
    accounts = MessagingAccount.objects.using(schema_editor.connection.alias)
    # lower() of the database, as the constraint compares (on SQLite it folds ASCII letters only).
    clashing = (
        accounts.values(name_lower=Lower("name"))
        .annotate(count=Count("id"))
        .filter(count__gt=1)
        .values_list("name_lower", flat=True)
    )
    for name_lower in list(clashing):
        group = accounts.alias(name_lower=Lower("name")).filter(name_lower=name_lower)
        group = list(group.order_by("created_at", "id"))
        for account in group[1:]:
            number = 2
            while True:
                suffix = f" ({number})"
                candidate = account.name[: NAME_MAX_LENGTH - len(suffix)] + suffix
                taken = accounts.alias(name_lower=Lower("name")).filter(name_lower=Lower(Value(candidate)))
                if not taken.exists():
                    break
                number += 1
            account.name = candidate
            account.save(update_fields=["name"])


class Migration(migrations.Migration):
    dependencies = [
        ("omnichannel", "0004_attachment_original_name"),
    ]

    operations = [
        migrations.RunPython(rename_names_equal_but_for_case, migrations.RunPython.noop),
        migrations.RemoveConstraint(
            model_name="messagingaccount",
            name="messaging_account_name_unique",
        ),
        migrations.AddConstraint(
            model_name="messagingaccount",
            constraint=models.UniqueConstraint(
                Lower("name"),
                name="messaging_account_name_unique_ci",
                violation_error_message="A messaging account with this name exists already (names are "
                "compared without regard to case).",
            ),
        ),
    ]
