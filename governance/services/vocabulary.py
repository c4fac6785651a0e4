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
