from __future__ import annotations

from typing import Any

from django.apps import AppConfig
from django.db.models.signals import post_migrate


def _sync_role_permissions(sender: AppConfig, using: str = "default", **kwargs: Any) -> None:
    from governance.services.roles import role_permissions_sync

    role_permissions_sync(using=using)


class GovernanceConfig(AppConfig):
    name = "governance"
    verbose_name = "Governance"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from governance import checks  # noqa: F401 - registers the system checks

        # After every migrate (and every test flush, which empties the groups table) the role
        # groups exist and hold their model permissions. Runs once per migrated app, so
        # permissions of apps migrated after governance are picked up too.
        post_migrate.connect(
            _sync_role_permissions, dispatch_uid="governance.role_permissions_sync"
        )
