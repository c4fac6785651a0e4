from __future__ import annotations

from typing import Any

from django.apps import AppConfig
from django.db.models.signals import post_migrate


def _sync_role_permissions(sender: AppConfig, using: str = "default", **kwargs: Any) -> None:
    from governance.services.roles import role_permissions_sync

    role_permissions_sync(using=using)


# The data migrations whose rows a database flush removes, with their seed functions. They
# are idempotent (get_or_create) and, like the migrations, write no audit events: restoring the
# shipped defaults is not an action of anyone.
SEEDED_BY_MIGRATIONS = (
    ("0004_vocabulary_defaults", "seed"),
    ("0006_model_registry", "seed_registry_defaults"),
    ("0007_identity_checks", "seed_face_backends"),
)


def _ensure_seeded_defaults(sender: AppConfig, using: str = "default", **kwargs: Any) -> None:
    import importlib

    from django.apps import apps
    from django.db import connections

    with connections[using].schema_editor(atomic=True) as schema_editor:
        for module, function in SEEDED_BY_MIGRATIONS:
            seed = getattr(importlib.import_module(f"governance.migrations.{module}"), function)
            seed(apps, schema_editor)


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
        # Rows that data migrations seed (vocabularies, the default licences) come back after
        # a flush too (tests flush after every transactional test), like the role groups.
        post_migrate.connect(
            _ensure_seeded_defaults, sender=self, dispatch_uid="governance.seeded_defaults"
        )

        # Revoking a training consent flags the dataset snapshots that relied on it (and blocks
        # the models trained on them).
        from governance.hooks import register_consent_revocation_handler
        from governance.services.datasets import dataset_snapshots_on_consent_revocation

        register_consent_revocation_handler(
            dataset_snapshots_on_consent_revocation,
            uid="governance.dataset_snapshots_on_consent_revocation",
        )
