"""The audit trail: the code registry, the hash chain and its canonical form, the append-only
trigger, tamper detection by audit_verify, the export command, the request context, the
read-only admin, and the same code on SQLite."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import subprocess
import sys
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django.db import DatabaseError, connection, transaction

from governance.audit_codes import AUDIT_CODE_RANGES, AuditAction
from governance.models import GENESIS_HASH, AuditEvent
from governance.roles import Role
from governance.selectors.audit import audit_chain_verify
from governance.services.audit import audit_event_record
from tests.factories import UserFactory

REPO_ROOT = Path(__file__).resolve().parents[2]


def record(n: int = 1, **overrides: object) -> list[AuditEvent]:
    values: dict[str, object] = {
        "actor": None,
        "action": AuditAction.AUDIT_EXPORT,
        "target_type": "governance.auditevent",
        "target_id": "*",
        "payload": {},
    }
    values.update(overrides)
    with transaction.atomic():
        return [audit_event_record(**values) for _ in range(n)]  # type: ignore[arg-type]


def expected_hash(event: AuditEvent) -> str:
    """The canonical form, written out independently of the implementation."""
    body = {
        "v": 1,
        "sequence": event.sequence,
        "prev_hash": event.prev_hash,
        "occurred_at": event.occurred_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f+00:00"),
        "actor_id": event.actor_id,
        "action": event.action,
        "target_type": event.target_type,
        "target_id": event.target_id,
        "payload": event.payload,
        "request_id": event.request_id,
        "client_address": event.client_address,
    }
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


# --- the registry -----------------------------------------------------------------------------


def test_every_action_has_a_unique_code_and_dotted_name_in_a_declared_range():
    codes = [member.value for member in AuditAction]
    names = [member.api_name for member in AuditAction]
    assert len(set(codes)) == len(codes)
    assert len(set(names)) == len(names)
    for member in AuditAction:
        assert "." in member.api_name
        assert AuditAction.from_api_name(member.api_name) is member
        ranges = [name for name, span in AUDIT_CODE_RANGES.items() if member.value in span]
        assert len(ranges) == 1, member
    spans = sorted(AUDIT_CODE_RANGES.values(), key=lambda span: span.start)
    assert all(a.stop <= b.start for a, b in zip(spans, spans[1:], strict=False))


def test_released_codes_never_change():
    """Stored events refer to these numbers for ever."""
    assert AuditAction.ROLE_GRANT == 1001
    assert AuditAction.PERSON_CREATE == 1101
    assert AuditAction.CONSENT_RECORD == 1201
    assert AuditAction.CONSENT_REVOKE == 1203
    assert AuditAction.APPROVAL_STEP_DECIDE == 1312
    assert AuditAction.AUDIT_EXPORT == 1401
    assert AuditAction.CONSENT_REVOKE.api_name == "consent.revoke"
    with pytest.raises(ValueError, match="Unknown audit action"):
        AuditAction.from_api_name("consent.erase")


# --- the chain --------------------------------------------------------------------------------


@pytest.mark.django_db
def test_events_form_a_hash_chain_over_their_canonical_json():
    actor = UserFactory()
    events = record(3, actor=actor, payload={"ü": "naïve", "b": [1, 2.5], "a": None})
    assert [e.sequence for e in events] == [1, 2, 3]
    assert events[0].prev_hash == GENESIS_HASH
    assert events[1].prev_hash == events[0].hash
    assert events[2].prev_hash == events[1].hash
    for event in AuditEvent.objects.all():  # as read back from PostgreSQL
        assert event.hash == expected_hash(event)
    report = audit_chain_verify()
    assert (report.ok, report.events_checked, report.head_sequence) == (True, 3, 3)
    assert report.head_hash == events[2].hash


@pytest.mark.django_db
def test_payload_values_are_normalised_to_what_the_database_gives_back():
    when = datetime(2026, 5, 4, 3, 2, 1, 123456, tzinfo=UTC)
    ident = uuid.UUID(int=7)
    [event] = record(
        payload={
            "when": when,
            "amount": Decimal("1.10"),
            "id": ident,
            "roles": {Role.REVIEWER, Role.OPERATOR},
            "pair": (1, 2),
            "role": Role.REQUESTER,
            "action": AuditAction.CONSENT_REVOKE,
            "score": 0.8731,
            "zero": -0.0,
        }
    )
    assert event.payload == {
        "when": "2026-05-04T03:02:01.123456+00:00",
        "amount": "1.10",
        "id": str(ident),
        "roles": ["operator", "reviewer"],
        "pair": [1, 2],
        "role": "requester",
        "action": 1203,
        "score": 0.8731,
        "zero": 0.0,
    }
    stored = AuditEvent.objects.get(pk=event.pk)
    assert stored.payload == event.payload
    assert stored.compute_hash() == event.hash


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("payload", "error", "message"),
    [
        ({"x": float("nan")}, ValueError, "cannot be stored exactly"),
        ({"x": 1e16}, ValueError, "cannot be stored exactly"),
        ({1: "a"}, TypeError, "is not a string"),
        ({"x": object()}, TypeError, "object is not JSON"),
    ],
)
def test_payloads_that_would_not_survive_storage_are_refused(payload, error, message):
    with pytest.raises(error, match=message):
        record(payload=payload)
    assert not AuditEvent.objects.exists()


@pytest.mark.django_db
def test_audit_event_record_checks_its_arguments():
    with pytest.raises(TypeError, match="AuditAction"):
        record(action=1401)
    with pytest.raises(TypeError, match="saved User"):
        record(actor=UserFactory.build())
    with pytest.raises(ValueError, match="target_type"):
        record(target_type="")


@pytest.mark.django_db(transaction=True)
def test_audit_event_record_refuses_to_run_outside_a_transaction():
    with pytest.raises(RuntimeError, match="inside the caller's transaction"):
        audit_event_record(
            actor=None, action=AuditAction.AUDIT_EXPORT, target_type="a.b", target_id="1"
        )
    assert not AuditEvent.objects.exists()


@pytest.mark.django_db
def test_an_event_rolls_back_with_the_change_it_describes():
    with pytest.raises(ZeroDivisionError), transaction.atomic():
        audit_event_record(
            actor=None, action=AuditAction.AUDIT_EXPORT, target_type="a.b", target_id="1"
        )
        1 / 0  # noqa: B018 - the state change that fails after its event was appended
    assert not AuditEvent.objects.exists()
    [event] = record()
    assert event.sequence == 1


# --- append-only trigger ----------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE governance_auditevent SET target_id = 'x'",
        "UPDATE governance_auditevent SET target_id = 'x' WHERE false",
        "DELETE FROM governance_auditevent",
        "TRUNCATE governance_auditevent",
    ],
)
def test_the_database_refuses_update_delete_and_truncate(statement):
    record(2)
    with pytest.raises(DatabaseError, match="append-only") as info, transaction.atomic():
        with connection.cursor() as cursor:
            # As in production: the test database's TRUNCATE door (see conftest) is shut.
            cursor.execute("SET LOCAL governance.audit_truncate_allowed = 'off'")
            # Check the deferred foreign keys of the rows just written now: PostgreSQL refuses
            # to TRUNCATE a table with pending trigger events before any trigger of ours runs.
            cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
            cursor.execute(statement)
    verb = statement.split()[0]
    assert f"{verb} is not allowed" in str(info.value)
    assert AuditEvent.objects.count() == 2


@pytest.mark.django_db
def test_the_orm_cannot_change_or_delete_events_either():
    [event] = record()
    for operation in (
        lambda: AuditEvent.objects.filter(pk=event.pk).update(payload={"x": 1}),
        lambda: AuditEvent.objects.filter(pk=event.pk).delete(),
    ):
        with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
            operation()
    event.payload = {"x": 1}
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        event.save()


@pytest.mark.django_db
def test_the_truncate_door_never_opens_update_or_delete():
    record()
    with connection.cursor() as cursor:
        cursor.execute("SHOW governance.audit_truncate_allowed")
        assert cursor.fetchone() == ("on",)  # the test database's setting (conftest)
    for statement in (
        "UPDATE governance_auditevent SET target_id = 'x'",
        "DELETE FROM governance_auditevent",
    ):
        with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
            with connection.cursor() as cursor:
                cursor.execute(statement)


# --- tamper detection -------------------------------------------------------------------------


def _tamper(sql: str, params: list[object]) -> None:
    """What a database superuser could do: switch triggers off for the transaction."""
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL session_replication_role = replica")
        cursor.execute(sql, params)
        cursor.execute("SET LOCAL session_replication_role = origin")


@pytest.mark.django_db
def test_audit_verify_reports_ok_with_the_head(capsys):
    call_command("audit_verify")
    assert "Audit chain OK: no events yet." in capsys.readouterr().out
    events = record(3)
    call_command("audit_verify")
    assert capsys.readouterr().out.strip() == (
        f"Audit chain OK: 3 events, head sequence 3, head hash {events[-1].hash}."
    )


@pytest.mark.django_db
def test_audit_verify_names_the_first_altered_event():
    events = record(4, payload={"reason": "original"})
    _tamper(
        "UPDATE governance_auditevent SET payload = %s WHERE id = %s",
        ['{"reason": "edited"}', events[2].pk],
    )
    report = audit_chain_verify()
    assert not report.ok
    assert report.first_break is not None
    assert (report.first_break.event_id, report.first_break.sequence) == (events[2].pk, 3)
    assert "altered after writing" in report.first_break.problem
    assert report.events_checked == 2
    with pytest.raises(CommandError) as info:
        call_command("audit_verify")
    assert str(info.value).startswith(f"Audit chain BROKEN at event id={events[2].pk} (sequence 3)")


@pytest.mark.django_db
def test_audit_verify_detects_a_removed_event_and_a_relinked_one():
    events = record(4)
    _tamper("DELETE FROM governance_auditevent WHERE id = %s", [events[1].pk])
    report = audit_chain_verify()
    assert report.first_break is not None
    assert report.first_break.event_id == events[2].pk
    assert report.first_break.problem == "sequence 3 where 2 was expected"


@pytest.mark.django_db
def test_audit_verify_detects_a_rewritten_link():
    events = record(3)
    # Re-hashing an altered event is not enough: the next link no longer matches.
    altered = AuditEvent.objects.get(pk=events[1].pk)
    altered.target_id = "forged"
    new_hash = altered.compute_hash()
    _tamper(
        "UPDATE governance_auditevent SET target_id = 'forged', hash = %s WHERE id = %s",
        [new_hash, events[1].pk],
    )
    report = audit_chain_verify()
    assert report.first_break is not None
    assert report.first_break.event_id == events[2].pk
    assert "does not match the previous event's hash" in report.first_break.problem


# --- export command ---------------------------------------------------------------------------


@pytest.mark.django_db
def test_audit_export_command_writes_verifiable_json_lines(tmp_path):
    officer = UserFactory(roles=[Role.COMPLIANCE_OFFICER])
    record(2, payload={"note": "=cmd()"})
    target = tmp_path / "audit.jsonl"
    call_command("audit_export", "--user", officer.username, "--output", str(target))
    lines = [json.loads(line) for line in target.read_text(encoding="utf-8").splitlines()]
    # The role grant, the two events, and the export itself (recorded before the export ran).
    assert [line["action_name"] for line in lines] == [
        "role.grant",
        "audit.export",
        "audit.export",
        "audit.export",
    ]
    assert lines[-1]["actor_username"] == officer.username
    for line in lines:
        canonical = json.dumps(
            line["canonical"], sort_keys=True, separators=(",", ":"), ensure_ascii=False
        )
        assert hashlib.sha256(canonical.encode()).hexdigest() == line["hash"]
    assert [line["canonical"]["prev_hash"] for line in lines[1:]] == [
        line["hash"] for line in lines[:-1]
    ]


@pytest.mark.django_db
def test_audit_export_command_csv_filters_and_refuses_unauthorised_users():
    officer = UserFactory(roles=[Role.COMPLIANCE_OFFICER])
    record(2, payload={"note": "x"}, target_id="=HYPERLINK(1)")
    out = io.StringIO()
    call_command(
        "audit_export",
        "--user",
        officer.username,
        "--format",
        "csv",
        "--target-type",
        "governance.auditevent",
        "--action",
        "audit.export",
        stdout=out,
    )
    rows = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert [row["target_id"] for row in rows] == ["'=HYPERLINK(1)", "'=HYPERLINK(1)", "*"]
    assert {row["action_name"] for row in rows} == {"audit.export"}
    with pytest.raises(CommandError, match="not an active user allowed to export"):
        call_command("audit_export", "--user", UserFactory(roles=[Role.REVIEWER]).username)
    with pytest.raises(CommandError, match="must be an ISO 8601 time with a zone"):
        call_command("audit_export", "--user", officer.username, "--since", "yesterday")


# --- request context --------------------------------------------------------------------------


@pytest.mark.django_db
def test_api_events_carry_the_request_id_and_client_address(api):
    officer = UserFactory(roles=[Role.COMPLIANCE_OFFICER])
    api.force_authenticate(officer)
    response = api.get(
        "/api/governance/audit/export/", HTTP_X_REQUEST_ID="trace-123", REMOTE_ADDR="10.1.2.3"
    )
    assert response["X-Request-ID"] == "trace-123"
    event = AuditEvent.objects.get(action=AuditAction.AUDIT_EXPORT)
    assert (event.request_id, event.client_address) == ("trace-123", "10.1.2.3")

    response = api.get("/api/governance/me/", HTTP_X_REQUEST_ID="bad id with spaces")
    assert response["X-Request-ID"] != "bad id with spaces"
    assert len(response["X-Request-ID"]) == 32


# --- admin ------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_audit_admin_is_read_only(client):
    officer = UserFactory(roles=[Role.COMPLIANCE_OFFICER], is_staff=True)
    [event] = record()
    client.force_login(officer)
    assert client.get("/admin/governance/auditevent/").status_code == 200
    detail = client.get(f"/admin/governance/auditevent/{event.pk}/change/")
    assert detail.status_code == 200
    assert b"Save" not in detail.content
    assert client.get("/admin/governance/auditevent/add/").status_code == 403
    assert client.post(f"/admin/governance/auditevent/{event.pk}/delete/").status_code == 403
    assert client.post(f"/admin/governance/auditevent/{event.pk}/change/", {}).status_code == 403
    reviewer = UserFactory(roles=[Role.REVIEWER], is_staff=True)
    client.force_login(reviewer)
    assert client.get("/admin/governance/auditevent/").status_code == 403


# --- SQLite -----------------------------------------------------------------------------------


def test_the_same_code_works_on_sqlite(tmp_path):
    """`make run` uses SQLite: the trigger migration is a no-op there and the chain works."""
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings.local",
        "PLATFORM_VAR_DIR": str(tmp_path),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
    }
    env.pop("CELERY_BROKER_URL", None)
    script = (
        "from django.db import transaction;"
        "from governance.audit_codes import AuditAction as A;"
        "from governance.services.audit import audit_event_record as r;"
        "from governance.selectors.audit import audit_chain_verify as v;"
        "[transaction.atomic()(lambda: r(actor=None, action=A.AUDIT_EXPORT,"
        " target_type='a.b', target_id=i, payload={'i': i}))() for i in range(3)];"
        "from governance.models import AuditEvent as E;"
        "E.objects.filter(sequence=1).update(target_id='changed');"
        "print(v())"
    )
    for command in (
        [sys.executable, "manage.py", "migrate", "-v", "0"],
        [sys.executable, "manage.py", "shell", "-c", script],
    ):
        result = subprocess.run(
            command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120
        )
        assert result.returncode == 0, result.stdout + result.stderr
    # No trigger on SQLite, so the update went through; the chain still catches it.
    assert "ok=False" in result.stdout
    assert "sequence=1" in result.stdout
