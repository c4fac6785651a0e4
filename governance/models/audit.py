from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime

from django.conf import settings
from django.db import models

from governance.audit_codes import AuditAction

GENESIS_HASH = "0" * 64
# Bumped only if the canonical form ever changes; it is part of every hashed body.
CANONICAL_VERSION = 1


def canonical_json(value: object) -> bytes:
    """Sorted keys, compact separators, UTF-8, no NaN/Infinity: one byte string per value."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def canonical_timestamp(value: datetime) -> str:
    """ISO 8601 in UTC with microseconds, e.g. ``2026-11-24T00:23:45.123456+00:00``."""
    return value.astimezone(UTC).isoformat(timespec="microseconds")


class AuditEvent(models.Model):
    """One entry of the tamper-evident audit trail (Zulip's ``RealmAuditLog`` semantics).

    ``actor`` is the user who acted (``None`` for the system itself); the target
    (``target_type`` = model label such as ``"governance.consentrecord"``, ``target_id`` = its
    key as text) is what the action changed or read. ``action`` is a stable code from
    ``governance.audit_codes.AuditAction``. ``payload`` holds what changed (old/new values,
    reasons, hashes) and never secrets. ``request_id`` and ``client_address`` come from the HTTP
    request (or the task) that caused the event.

    The events form a hash chain: ``sequence`` counts 1, 2, 3, ... without gaps, ``prev_hash``
    is the ``hash`` of the event before (``GENESIS_HASH`` for the first), and ``hash`` is the
    SHA-256 of the event's canonical JSON (``governance.services.audit.audit_event_canonical``).
    Rows are written only by ``audit_event_record``; on PostgreSQL a trigger rejects UPDATE,
    DELETE and TRUNCATE of this table, and ``manage.py audit_verify`` re-checks the chain.
    """

    sequence = models.PositiveBigIntegerField(unique=True)
    occurred_at = models.DateTimeField(db_index=True)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    action = models.PositiveIntegerField(choices=AuditAction.choices(), db_index=True)
    target_type = models.CharField(max_length=100)
    target_id = models.CharField(max_length=64)
    payload = models.JSONField(default=dict)
    request_id = models.CharField(max_length=64, blank=True)
    client_address = models.CharField(max_length=45, blank=True)
    prev_hash = models.CharField(max_length=64, unique=True)
    hash = models.CharField(max_length=64, unique=True)

    class Meta:
        ordering = ["sequence"]
        permissions = [("export_auditevent", "Can export and verify the audit trail")]
        indexes = [models.Index(fields=["target_type", "target_id"])]

    def __str__(self) -> str:
        return f"#{self.sequence} {self.action_name} {self.target_type}:{self.target_id}"

    def canonical_body(self) -> dict[str, object]:
        """The hashed fields: everything that says what happened, nothing that depends on the
        row's database id."""
        return {
            "v": CANONICAL_VERSION,
            "sequence": self.sequence,
            "prev_hash": self.prev_hash,
            "occurred_at": canonical_timestamp(self.occurred_at),
            "actor_id": self.actor_id,
            "action": int(self.action),
            "target_type": self.target_type,
            "target_id": self.target_id,
            "payload": self.payload,
            "request_id": self.request_id,
            "client_address": self.client_address,
        }

    def compute_hash(self) -> str:
        return hashlib.sha256(canonical_json(self.canonical_body())).hexdigest()

    @property
    def action_name(self) -> str:
        try:
            return AuditAction.from_code(self.action).api_name
        except ValueError:
            return f"unknown.{self.action}"
