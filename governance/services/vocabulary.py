from __future__ import annotations

from django.db import transaction
from django.forms.models import model_to_dict

from governance.audit_codes import AuditAction
from governance.models import Channel, Purpose, Territory, User
from governance.services.audit import audit_event_record, audit_target

VocabularyEntry = Purpose | Channel | Territory


@transaction.atomic
def vocabulary_entry_save(*, entry: VocabularyEntry, acting_user: User | None) -> VocabularyEntry:
    """Create or change a purpose, channel or territory (the admin's save), audited with the
    old and new values. Entries are retired with ``is_active=False``, never deleted."""
    entry.full_clean(validate_unique=False)
    before = type(entry).objects.select_for_update().filter(pk=entry.pk).first()
    new = model_to_dict(entry)
    target_type, target_id = audit_target(entry)
    if before is None:
        entry.save(force_insert=True)
        audit_event_record(
            actor=acting_user,
            action=AuditAction.VOCABULARY_CREATE,
            target_type=target_type,
            target_id=target_id,
            payload={"values": new},
        )
        return entry
    old = model_to_dict(before)
    changes = {key: {"old": old[key], "new": new[key]} for key in new if old[key] != new[key]}
    if changes:
        entry.save(force_update=True)
        audit_event_record(
            actor=acting_user,
            action=AuditAction.VOCABULARY_UPDATE,
            target_type=target_type,
            target_id=target_id,
            payload={"changes": changes},
        )
    return entry


def vocabulary_defaults_ensure() -> None:
    """Re-create the default purposes, channels and territories that migration 0004 seeds, where
    missing (never changing existing ones). Run after migrate and after every database flush,
    which empties tables that migrations seeded."""
    import importlib

    from governance.models import Channel, Purpose, Territory

    seeded = importlib.import_module("governance.migrations.0004_vocabulary_defaults")
    for code, label, is_commercial, risk_level, description in seeded.PURPOSES:
        Purpose.objects.get_or_create(
            code=code,
            defaults={
                "label": label,
                "is_commercial": is_commercial,
                "risk_level": risk_level,
                "description": description,
            },
        )
    for code, label in seeded.CHANNELS:
        Channel.objects.get_or_create(code=code, defaults={"label": label})
    existing = set(Territory.objects.values_list("code", flat=True))
    Territory.objects.bulk_create(
        [
            Territory(code=code, label=label)
            for code, label in seeded.TERRITORIES
            if code not in existing
        ]
    )
