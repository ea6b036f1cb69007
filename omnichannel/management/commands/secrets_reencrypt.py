"""Re-encrypt every secret at rest with the first key of FIELD_ENCRYPTION_KEYS.

Key rotation: put the new key first, keep the old ones after it, run this command, then remove
the old keys."""

from __future__ import annotations

from django.apps import apps
from django.core.management.base import BaseCommand
from django.db import transaction

from omnichannel.fields import EncryptedTextField


class Command(BaseCommand):
    help = (
        "Re-encrypt every encrypted field with the newest key (after adding a key to FIELD_ENCRYPTION_KEYS)."
    )

    def handle(self, *args: object, **options: object) -> None:
        total = 0
        for model in apps.get_models():
            fields = [f.name for f in model._meta.concrete_fields if isinstance(f, EncryptedTextField)]
            if not fields:
                continue
            with transaction.atomic():
                for instance in model._default_manager.select_for_update().only("pk", *fields).iterator():
                    # Reading decrypts with any key; saving encrypts with the first one.
                    instance.save(update_fields=fields)
                    total += 1
            self.stdout.write(f"{model._meta.label}: {', '.join(fields)}")
        self.stdout.write(self.style.SUCCESS(f"Re-encrypted {total} rows."))
