"""The audit API (list, streamed export, verify) and the OpenAPI schema of the governance API."""

from __future__ import annotations

import csv
import hashlib
import io
import json
from datetime import timedelta

import pytest
from django.db import connection, transaction
from django.urls import reverse
from django.utils import timezone

from governance.audit_codes import AuditAction
from governance.models import AuditEvent
from governance.roles import Role
from governance.services.roles import role_grant
from tests.factories import UserFactory, create_consent, create_person

pytestmark = pytest.mark.django_db

BASE = "/api/governance"


@pytest.fixture
def trail(compliance):
    """A person and a consent recorded by the compliance officer: a few events to filter."""
    person = create_person(acting_user=compliance)
    consent = create_consent(person=person, acting_user=compliance)
    return person, consent


def test_list_filters_by_action_actor_target_and_time(api, compliance, trail):
    person, consent = trail
    api.force_authenticate(compliance)

    def names(**params: str) -> list[str]:
        response = api.get(f"{BASE}/audit/events/", params)
        assert response.status_code == 200, response.json()
        return [event["action_name"] for event in response.json()["results"]]

    assert names() == ["role.grant"] * 5 + ["person.create", "consent.record"]
    assert names(actor=str(compliance.pk)) == ["person.create", "consent.record"]
    assert names(action="consent.record") == ["consent.record"]
    assert names(action=str(int(AuditAction.PERSON_CREATE))) == ["person.create"]
    assert names(target_type="governance.consentrecord", target_id=str(consent.pk)) == [
        "consent.record"
    ]
    created = AuditEvent.objects.get(action=AuditAction.PERSON_CREATE).occurred_at
    assert names(since=created.isoformat()) == ["person.create", "consent.record"]
    assert names(until=created.isoformat()) == ["role.grant"] * 5
    event = api.get(f"{BASE}/audit/events/", {"action": "person.create"}).json()["results"][0]
    assert event["actor"] == compliance.pk
    assert event["actor_username"] == compliance.username
    assert event["target_id"] == str(person.pk)
    assert len(event["hash"]) == len(event["prev_hash"]) == 64

    bad = api.get(f"{BASE}/audit/events/", {"action": "consent.erase"})
    assert bad.status_code == 400
    assert bad.json()["error"]["fields"] == {"action": ["Unknown audit action 'consent.erase'."]}
    now = timezone.now()
    bad = api.get(
        f"{BASE}/audit/events/",
        {"since": now.isoformat(), "until": (now - timedelta(hours=1)).isoformat()},
    )
    assert bad.status_code == 400
    assert bad.json()["error"]["fields"] == {"until": ["The range ends before it starts."]}


def test_export_streams_json_lines_that_verify_offline(api, compliance, trail):
    api.force_authenticate(compliance)
    response = api.get(f"{BASE}/audit/export/", {"target_type": "governance.person"})
    assert response.status_code == 200
    assert response.streaming
    assert response["Content-Type"] == "application/x-ndjson; charset=utf-8"
    assert response["Content-Disposition"].startswith('attachment; filename="audit-')
    lines = [json.loads(line) for line in b"".join(response.streaming_content).splitlines()]
    assert [line["action_name"] for line in lines] == ["person.create"]
    canonical = json.dumps(
        lines[0]["canonical"], sort_keys=True, separators=(",", ":"), ensure_ascii=False
    ).encode()
    assert hashlib.sha256(canonical).hexdigest() == lines[0]["hash"]
    export = AuditEvent.objects.get(action=AuditAction.AUDIT_EXPORT)
    assert export.actor == compliance
    assert export.payload == {
        "format": "jsonl",
        "filters": {"target_type": "governance.person"},
    }


def test_export_as_csv(api, compliance, trail):
    api.force_authenticate(compliance)
    response = api.get(
        f"{BASE}/audit/export/",
        {"file_format": "csv", "action": "consent.record"},
        HTTP_ACCEPT="text/csv",
    )
    assert response.status_code == 200
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    rows = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert [row["action_name"] for row in rows] == ["consent.record"]
    assert json.loads(rows[0]["payload"])["territories"] == ["DE", "FR"]
    assert rows[0]["actor_username"] == compliance.username
    bad = api.get(f"{BASE}/audit/export/", {"file_format": "xml"})
    assert bad.status_code == 400
    assert bad.json()["error"]["code"] == "invalid"


def test_verify_reports_ok_then_the_first_broken_link(api, compliance, trail):
    api.force_authenticate(compliance)
    body = api.get(f"{BASE}/audit/verify/").json()
    head = AuditEvent.objects.order_by("-sequence").first()
    assert body == {
        "ok": True,
        "events_checked": head.sequence,
        "head_sequence": head.sequence,
        "head_hash": head.hash,
        "first_break": None,
    }
    victim = AuditEvent.objects.get(action=AuditAction.PERSON_CREATE)
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL session_replication_role = replica")
        cursor.execute(
            "UPDATE governance_auditevent SET actor_id = NULL WHERE id = %s", [victim.pk]
        )
    body = api.get(f"{BASE}/audit/verify/").json()
    assert body["ok"] is False
    assert body["first_break"]["event_id"] == victim.pk
    assert body["first_break"]["sequence"] == victim.sequence


def test_role_grants_made_through_the_service_are_in_the_trail(api, compliance):
    user = UserFactory()
    role_grant(user=user, role=Role.OPERATOR, acting_user=compliance)
    api.force_authenticate(compliance)
    [event] = api.get(f"{BASE}/audit/events/", {"target_id": str(user.pk)}).json()["results"]
    assert (event["action_name"], event["actor"], event["payload"]) == (
        "role.grant",
        compliance.pk,
        {"role": "operator"},
    )


# --- OpenAPI ----------------------------------------------------------------------------------

GOVERNANCE_OPERATIONS = {
    ("/api/governance/me/", "get"),
    ("/api/governance/vocabulary/", "get"),
    ("/api/governance/persons/", "get"),
    ("/api/governance/persons/create/", "post"),
    ("/api/governance/persons/{person_id}/", "get"),
    ("/api/governance/persons/{person_id}/reference-photo/", "get"),
    ("/api/governance/consents/", "get"),
    ("/api/governance/consents/create/", "post"),
    ("/api/governance/consents/{consent_id}/", "get"),
    ("/api/governance/consents/{consent_id}/supersede/", "post"),
    ("/api/governance/consents/{consent_id}/revoke/", "post"),
    ("/api/governance/consents/{consent_id}/evidence/{kind}/", "get"),
    ("/api/governance/approvals/inbox/", "get"),
    ("/api/governance/approvals/{request_id}/", "get"),
    ("/api/governance/approvals/steps/{step_id}/decide/", "post"),
    ("/api/governance/audit/events/", "get"),
    ("/api/governance/audit/export/", "get"),
    ("/api/governance/audit/verify/", "get"),
    # Licensed training data and the model registry.
    ("/api/governance/licensors/", "get"),
    ("/api/governance/licensors/create/", "post"),
    ("/api/governance/licences/", "get"),
    ("/api/governance/licences/create/", "post"),
    ("/api/governance/licences/{license_id}/", "get"),
    ("/api/governance/licences/{license_id}/withdraw/", "post"),
    ("/api/governance/datasets/", "get"),
    ("/api/governance/datasets/create/", "post"),
    ("/api/governance/datasets/{dataset_id}/", "get"),
    ("/api/governance/clips/", "get"),
    ("/api/governance/clips/create/", "post"),
    ("/api/governance/clips/{clip_id}/", "get"),
    ("/api/governance/snapshots/", "get"),
    ("/api/governance/snapshots/create/", "post"),
    ("/api/governance/snapshots/{snapshot_id}/", "get"),
    ("/api/governance/snapshots/{snapshot_id}/export/", "get"),
    ("/api/governance/snapshots/{snapshot_id}/status/", "get"),
    ("/api/governance/models/", "get"),
    ("/api/governance/models/{model_version_id}/", "get"),
    ("/api/governance/models/{model_version_id}/block/", "post"),
    ("/api/governance/models/{model_version_id}/deprecate/", "post"),
    # Identity checks: leakage reports, face matches, face thresholds.
    ("/api/governance/identity/leakage-reports/", "get"),
    ("/api/governance/identity/leakage-reports/{report_id}/", "get"),
    ("/api/governance/identity/leakage-reports/{report_id}/release/", "post"),
    ("/api/governance/identity/leakage-reports/{report_id}/reject/", "post"),
    ("/api/governance/identity/face-matches/", "get"),
    ("/api/governance/identity/face-thresholds/", "get"),
    ("/api/governance/identity/face-thresholds/{backend}/update/", "post"),
    ("/api/governance/identity/face-thresholds/{backend}/licence/", "post"),
}


def test_every_governance_endpoint_is_documented_with_its_shapes_and_errors(client):
    response = client.get(reverse("api-schema"), HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert response.status_code == 200
    schema = json.loads(response.content)
    documented = {
        (path, method)
        for path, operations in schema["paths"].items()
        if path.startswith("/api/governance/")
        for method in operations
        if method in {"get", "post", "put", "patch", "delete"}
    }
    assert documented == GOVERNANCE_OPERATIONS
    error_ref = "#/components/schemas/Error"
    for path, method in GOVERNANCE_OPERATIONS:
        operation = schema["paths"][path][method]
        assert operation.get("summary"), (path, method)
        assert operation.get("description"), (path, method)
        responses = operation["responses"]
        success = [code for code in responses if code.startswith("2")]
        assert success, (path, method)
        assert responses[success[0]].get("content"), (path, method)
        assert responses["401"]["content"]["application/json"]["schema"]["$ref"] == error_ref
        if method == "post":
            assert "requestBody" in operation, path
            assert "400" in responses, path
        if "{" in path:
            assert "404" in responses, path
    decide = schema["paths"]["/api/governance/approvals/steps/{step_id}/decide/"]["post"]
    assert {"400", "401", "403", "404", "409"} <= set(decide["responses"])
    create = schema["paths"]["/api/governance/consents/create/"]["post"]
    assert "multipart/form-data" in create["requestBody"]["content"]
    assert client.get(reverse("api-docs")).status_code == 200
