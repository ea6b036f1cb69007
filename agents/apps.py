from django.apps import AppConfig
from django.db.models.signals import post_migrate


class AgentsConfig(AppConfig):
    name = "agents"
    verbose_name = "Agents"

    def ready(self) -> None:
        # Permissions exist only after migrate has run; the roles are (re)built right after it.
        post_migrate.connect(_roles_sync_after_migrate, sender=self)


def _roles_sync_after_migrate(**kwargs: object) -> None:
    from .services import roles_sync

    roles_sync()
