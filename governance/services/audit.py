"""The only writer of ``AuditEvent``.

``audit_event_record`` appends one event to the hash chain inside the caller's transaction, so
the event and the state change it describes commit or roll back together. Appends are
serialized: on PostgreSQL with a transaction-scoped advisory lock taken before the chain head is
read (held until the caller's transaction ends, so two writers can never both extend the same
head); on SQLite the database's single writer lock (IMMEDIATE transactions, see
``config/settings/base.py``) does the same. The unique ``sequence`` and ``prev_hash`` columns
make a fork impossible even if the lock were bypassed: the second writer would fail.

Because the lock is held until commit, audited transactions are serialized from their first
audit append on: keep them short and append the audit event last where the order allows it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from datetime import date, datetime
from decimal import Decimal
from enum import Enum
from typing import Any, Protocol
from uuid import UUID

from django.db import connection, transaction
from django.db.models import Model
from django.utils import timezone

from governance.audit_codes import AuditAction
from governance.context import clean_client_address, clean_request_id, current_request_context
from governance.models import GENESIS_HASH, AuditEvent, User
from governance.models.audit import canonical_json, canonical_timestamp

# pg_advisory_xact_lock key of the audit chain ("audit" in ASCII); any constant would do, it
# only has to be the same in every process.
AUDIT_CHAIN_LOCK_KEY = 0x6175646974

JSONValue = None | bool | int | float | str | list["JSONValue"] | dict[str, "JSONValue"]

# Floats from 1e16 up print in exponent form and come back from PostgreSQL's jsonb as integers,
# which would change the canonical bytes; such values must be sent as strings or ints.
_MAX_FLOAT = 1e16


class RequestLike(Protocol):
    """An HttpRequest or DRF Request: ``RequestContextMiddleware`` sets these attributes."""

    @property
    def META(self) -> Mapping[str, Any]: ...  # Django's attribute name


def audit_target(obj: Model) -> tuple[str, str]:
    """``(target_type, target_id)`` of a model instance: its label and primary key."""
    return obj._meta.label_lower, str(obj.pk)


def _plain(value: object, path: str) -> JSONValue:
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, Enum):
        return _plain(value.value, path)
    if isinstance(value, str):
        return str(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        if not math.isfinite(value) or abs(value) >= _MAX_FLOAT:
            raise ValueError(f"audit payload {path}: {value!r} cannot be stored exactly.")
        return 0.0 if value == 0 else value  # -0.0 would come back from jsonb as 0.0
    if isinstance(value, Decimal | UUID):
        return str(value)
    if isinstance(value, datetime):
        return canonical_timestamp(value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Mapping):
        result: dict[str, JSONValue] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(f"audit payload {path}: key {key!r} is not a string.")
            result[key] = _plain(item, f"{path}.{key}")
        return result
    if isinstance(value, list | tuple):
        return [_plain(item, f"{path}[{index}]") for index, item in enumerate(value)]
    if isinstance(value, set | frozenset):
        return sorted((_plain(item, f"{path}[]") for item in value), key=canonical_json)
    raise TypeError(f"audit payload {path}: {type(value).__name__} is not JSON.")


def audit_payload_normalize(payload: Mapping[str, object] | None) -> dict[str, JSONValue]:
    """The payload exactly as it will be stored and read back (and therefore hashed)."""
    plain = _plain(dict(payload or {}), "payload")
    assert isinstance(plain, dict)
    normalized = json.loads(canonical_json(plain))
    assert isinstance(normalized, dict)
    return normalized


def _request_context(request: RequestLike | None) -> tuple[str, str]:
    if request is not None:
        request_id = getattr(request, "request_id", None) or clean_request_id(
            request.META.get("HTTP_X_REQUEST_ID")
        )
        address = getattr(request, "client_address", None) or clean_client_address(
            request.META.get("REMOTE_ADDR")
        )
        return str(request_id), address or ""
    context = current_request_context()
    if context is None:
        return "", ""
    return context.request_id, context.client_address or ""


def _lock_chain() -> None:
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [AUDIT_CHAIN_LOCK_KEY])
    # SQLite: the transaction already holds the database's only write lock (IMMEDIATE mode),
    # or takes it at the INSERT below before any other writer can commit.


def audit_event_record(
    *,
    actor: User | None,
    action: AuditAction,
    target_type: str,
    target_id: int | str,
    payload: Mapping[str, object] | None = None,
    request: RequestLike | None = None,
) -> AuditEvent:
    """Append one event to the audit chain, inside the caller's (open) transaction.

    ``request`` defaults to the current request context (``governance.context``), so services
    need not pass it. Raises ``RuntimeError`` outside a transaction: an audit row committed on
    its own could describe a change that then rolled back.
    """
    if not connection.in_atomic_block:
        raise RuntimeError("audit_event_record must run inside the caller's transaction.")
    if not isinstance(action, AuditAction):
        raise TypeError(f"action must be an AuditAction, got {action!r}.")
    if actor is not None and (not isinstance(actor, User) or actor.pk is None):
        raise TypeError(f"actor must be a saved User or None (the system), got {actor!r}.")
    if not target_type or len(target_type) > 100 or len(str(target_id)) > 64:
        raise ValueError("target_type (<=100 chars) and target_id (<=64 chars) are required.")
    normalized = audit_payload_normalize(payload)
    request_id, client_address = _request_context(request)

    _lock_chain()
    head = AuditEvent.objects.order_by("-sequence").values_list("sequence", "hash").first()
    sequence, prev_hash = (head[0] + 1, head[1]) if head else (1, GENESIS_HASH)
    event = AuditEvent(
        sequence=sequence,
        occurred_at=timezone.now(),
        actor=actor,
        action=action,
        target_type=target_type,
        target_id=str(target_id),
        payload=normalized,
        request_id=request_id,
        client_address=client_address,
        prev_hash=prev_hash,
    )
    event.hash = event.compute_hash()
    event.save(force_insert=True)
    return event


@transaction.atomic(durable=True)
def audit_export_record(
    *,
    file_format: str,
    filters: Mapping[str, object],
    acting_user: User,
    request: RequestLike | None = None,
) -> AuditEvent:
    """Record that ``acting_user`` exported the trail (what format, which filters)."""
    return audit_event_record(
        actor=acting_user,
        action=AuditAction.AUDIT_EXPORT,
        target_type="governance.auditevent",
        target_id="*",
        payload={"format": file_format, "filters": dict(filters)},
        request=request,
    )
