from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime

from django.db.models import QuerySet

from governance.audit_codes import AuditAction
from governance.models import GENESIS_HASH, AuditEvent
from governance.models.audit import canonical_timestamp

EXPORT_CHUNK = 2000


def audit_event_list(
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    actor_id: int | None = None,
    target_type: str | None = None,
    target_id: str | None = None,
    action: AuditAction | None = None,
) -> QuerySet[AuditEvent]:
    """Events in chain order, filtered: ``since`` inclusive, ``until`` exclusive."""
    qs = AuditEvent.objects.select_related("actor").order_by("sequence")
    if since is not None:
        qs = qs.filter(occurred_at__gte=since)
    if until is not None:
        qs = qs.filter(occurred_at__lt=until)
    if actor_id is not None:
        qs = qs.filter(actor_id=actor_id)
    if target_type:
        qs = qs.filter(target_type=target_type)
    if target_id:
        qs = qs.filter(target_id=target_id)
    if action is not None:
        qs = qs.filter(action=int(action))
    return qs


@dataclass(frozen=True)
class AuditChainBreak:
    event_id: int
    sequence: int
    problem: str


@dataclass(frozen=True)
class AuditChainReport:
    ok: bool
    events_checked: int
    head_sequence: int | None
    head_hash: str | None
    first_break: AuditChainBreak | None


def audit_chain_verify(*, chunk_size: int = EXPORT_CHUNK) -> AuditChainReport:
    """Walk the whole chain in order and report the first broken link.

    A link is broken when the sequence skips or repeats, when ``prev_hash`` is not the previous
    event's ``hash``, or when the stored ``hash`` is not the SHA-256 of the event's canonical
    JSON (its content was changed after it was written).
    """
    expected_sequence = 1
    previous_hash = GENESIS_HASH
    checked = 0
    last: AuditEvent | None = None
    for event in AuditEvent.objects.order_by("sequence").iterator(chunk_size=chunk_size):
        problem: str | None = None
        if event.sequence != expected_sequence:
            problem = f"sequence {event.sequence} where {expected_sequence} was expected"
        elif event.prev_hash != previous_hash:
            problem = (
                f"prev_hash {event.prev_hash[:16]}… does not match the previous event's hash "
                f"{previous_hash[:16]}…"
            )
        elif event.compute_hash() != event.hash:
            problem = "the stored hash does not match the event's content (altered after writing)"
        if problem is not None:
            return AuditChainReport(
                ok=False,
                events_checked=checked,
                head_sequence=last.sequence if last else None,
                head_hash=last.hash if last else None,
                first_break=AuditChainBreak(event.pk, event.sequence, problem),
            )
        checked += 1
        expected_sequence += 1
        previous_hash = event.hash
        last = event
    return AuditChainReport(
        ok=True,
        events_checked=checked,
        head_sequence=last.sequence if last else None,
        head_hash=last.hash if last else None,
        first_break=None,
    )


EXPORT_COLUMNS = [
    "id",
    "sequence",
    "occurred_at",
    "actor_id",
    "actor_username",
    "action",
    "action_name",
    "target_type",
    "target_id",
    "payload",
    "request_id",
    "client_address",
    "prev_hash",
    "hash",
]


def audit_export_record_dict(event: AuditEvent) -> dict[str, object]:
    """One exported event: its canonical body (so ``sha256(canonical_json(body))`` can be
    re-computed offline and compared with ``hash``) plus id, hash and readable names."""
    return {
        "id": event.pk,
        "hash": event.hash,
        "action_name": event.action_name,
        "actor_username": event.actor.get_username() if event.actor else None,
        "canonical": event.canonical_body(),
    }


def audit_export_jsonl(queryset: QuerySet[AuditEvent]) -> Iterator[str]:
    """JSON Lines, one event per line, streamed in chunks."""
    for event in queryset.iterator(chunk_size=EXPORT_CHUNK):
        record = audit_export_record_dict(event)
        yield json.dumps(record, sort_keys=True, ensure_ascii=False, separators=(",", ":")) + "\n"


_FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


def _cell(value: object) -> object:
    # Spreadsheet formula injection: text cells that a spreadsheet would evaluate get a quote.
    if isinstance(value, str) and value.startswith(_FORMULA_PREFIXES):
        return "'" + value
    return value


def audit_export_csv(queryset: QuerySet[AuditEvent]) -> Iterator[str]:
    """CSV with a header row, streamed. For reading; the JSON Lines export is the verifiable
    one (CSV flattens types and escapes formula-like cells)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(EXPORT_COLUMNS)
    for event in queryset.iterator(chunk_size=EXPORT_CHUNK):
        writer.writerow(
            [
                _cell(value)
                for value in (
                    event.pk,
                    event.sequence,
                    canonical_timestamp(event.occurred_at),
                    event.actor_id if event.actor_id is not None else "",
                    event.actor.get_username() if event.actor else "",
                    event.action,
                    event.action_name,
                    event.target_type,
                    event.target_id,
                    json.dumps(event.payload, sort_keys=True, ensure_ascii=False),
                    event.request_id,
                    event.client_address,
                    event.prev_hash,
                    event.hash,
                )
            ]
        )
        yield buffer.getvalue()
        buffer.seek(0)
        buffer.truncate(0)
    # Header only when there are no events.
    if buffer.getvalue():
        yield buffer.getvalue()
