"""The persons and consents API: shapes, filters, the one error shape, downloads."""

from __future__ import annotations

import hashlib
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone

from governance.audit_codes import AuditAction
from governance.models import AuditEvent, ConsentRecord, EvidenceFile, Person
from tests.factories import (
    create_consent,
    create_person,
    form_upload,
    jpeg_bytes,
    mp4_bytes,
    pdf_bytes,
    photo_upload,
    upload,
    video_upload,
)

pytestmark = pytest.mark.django_db

BASE = "/api/governance"


def consent_form(person: Person, /, **overrides: object) -> dict[str, object]:
    now = timezone.now()
    data: dict[str, object] = {
        "person": person.pk,
        "role": "driving_performer",
        "purposes": "research,internal_training_video",
        "channels": ["internal", "web"],
        "territories": ["DE"],
        "valid_from": (now - timedelta(hours=1)).isoformat(),
        "valid_until": (now + timedelta(days=30)).isoformat(),
        "signed_form": form_upload(),
    }
    data.update(overrides)
    return {key: value for key, value in data.items() if value is not None}


def test_enrol_a_person_and_record_a_consent_over_the_api(api, compliance):
    api.force_authenticate(compliance)
    response = api.post(
        f"{BASE}/persons/create/",
        {
            "full_name": "Lin Example",
            "identity_verification_note": "ID card checked on video call",
            "reference_photo": photo_upload(),
        },
        format="multipart",
        HTTP_X_REQUEST_ID="enrol-1",
    )
    assert response.status_code == 201, response.json()
    person = response.json()
    assert person["full_name"] == "Lin Example"
    assert person["identity_verified_by"] == compliance.pk
    assert person["reference_photo"]["sha256"] == hashlib.sha256(jpeg_bytes()).hexdigest()
    assert person["reference_photo"]["content_type"] == "image/jpeg"
    assert AuditEvent.objects.get(action=AuditAction.PERSON_CREATE).request_id == "enrol-1"

    response = api.post(
        f"{BASE}/consents/create/",
        consent_form(Person.objects.get(pk=person["id"]), statement_video=video_upload()),
        format="multipart",
    )
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["person"] == person["id"]
    assert body["role"] == "driving_performer"
    assert body["purposes"] == ["internal_training_video", "research"]
    assert body["channels"] == ["internal", "web"]
    assert body["territories"] == ["DE"]
    assert body["commercial_use"] is False
    assert body["status"] == "active"
    assert body["is_valid_now"] is True
    assert body["signed_form"]["sha256"] == hashlib.sha256(pdf_bytes()).hexdigest()
    assert body["statement_video"]["content_type"] == "video/mp4"
    assert body["recorded_by"] == compliance.pk
    assert (body["supersedes"], body["superseded_by"], body["ended_at"]) == (None, None, None)


@pytest.mark.parametrize(
    ("overrides", "field", "message"),
    [
        ({"purposes": "marketing"}, "purposes", "are commercial, but the consent does not allow"),
        ({"territories": ["WW", "FR"]}, "territories", "already covers every territory"),
        ({"channels": None}, "channels", "This field is required."),
        ({"valid_until": "2000-01-01T00:00:00Z"}, "valid_until", "ends before it starts"),
        (
            {"signed_form": upload(jpeg_bytes(), "form.pdf", "application/pdf")},
            "signed_form",
            "The file's content is image/jpeg; expected application/pdf.",
        ),
        ({"person": 999999}, "person", "No such person."),
        ({"role": "bystander"}, "role", '"bystander" is not a valid choice.'),
    ],
)
def test_bad_consent_input_answers_400_in_the_one_error_shape(
    api, compliance, media_root, overrides, field, message
):
    person = create_person(acting_user=compliance)
    api.force_authenticate(compliance)
    before = (AuditEvent.objects.count(), EvidenceFile.objects.count())
    files_before = sorted(media_root.rglob("*"))
    response = api.post(
        f"{BASE}/consents/create/", consent_form(person, **overrides), format="multipart"
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid"
    assert any(message in text for text in error["fields"][field]), error
    assert ConsentRecord.objects.count() == 0
    assert (AuditEvent.objects.count(), EvidenceFile.objects.count()) == before
    assert sorted(media_root.rglob("*")) == files_before


def test_evidence_over_the_size_limit_answers_400(api, compliance, settings):
    person = create_person(acting_user=compliance)
    limit = len(mp4_bytes()) - 1
    settings.GOVERNANCE_EVIDENCE_MAX_VIDEO_BYTES = limit
    api.force_authenticate(compliance)
    response = api.post(
        f"{BASE}/consents/create/",
        consent_form(person, signed_form=None, statement_video=video_upload()),
        format="multipart",
    )
    assert response.status_code == 400
    assert response.json()["error"]["fields"]["statement_video"] == [
        f"The file is {len(mp4_bytes())} bytes; the limit is {limit} bytes."
    ]
    assert not ConsentRecord.objects.exists()


def test_list_filters(api, compliance, reviewer):
    ada = create_person(acting_user=compliance, full_name="Ada")
    bob = create_person(acting_user=compliance, full_name="Bob")
    research_de = create_consent(person=ada, acting_user=compliance)
    worldwide = create_consent(
        person=bob,
        acting_user=compliance,
        role="both",
        purposes=["marketing"],
        commercial_use=True,
        channels=["social"],
        territories=["WW"],
    )
    future = create_consent(
        person=bob,
        acting_user=compliance,
        valid_from=timezone.now() + timedelta(days=10),
        valid_until=None,
    )
    api.force_authenticate(reviewer)

    def ids(**params: str) -> list[int]:
        response = api.get(f"{BASE}/consents/", params)
        assert response.status_code == 200, response.json()
        return [item["id"] for item in response.json()["results"]]

    assert ids() == [future.pk, worldwide.pk, research_de.pk]
    assert ids(person=str(bob.pk)) == [future.pk, worldwide.pk]
    assert ids(role="driving_performer") == [worldwide.pk]
    assert ids(purpose="marketing") == [worldwide.pk]
    assert ids(channel="web") == [future.pk, research_de.pk]
    assert ids(territory="us") == [worldwide.pk]
    assert ids(territory="DE") == [future.pk, worldwide.pk, research_de.pk]
    assert ids(valid_at=timezone.now().isoformat()) == [worldwide.pk, research_de.pk]
    assert ids(status="active", limit="1") == [future.pk]
    page = api.get(f"{BASE}/consents/", {"limit": "1", "offset": "1"}).json()
    assert (page["count"], [item["id"] for item in page["results"]]) == (3, [worldwide.pk])
    response = api.get(f"{BASE}/consents/", {"status": "forgotten"})
    assert response.status_code == 400
    assert "status" in response.json()["error"]["fields"]

    response = api.get(f"{BASE}/persons/", {"search": "bo"})
    assert [p["id"] for p in response.json()["results"]] == [bob.pk]


def test_supersede_and_revoke_over_the_api(api, compliance):
    person = create_person(acting_user=compliance)
    old = create_consent(person=person, acting_user=compliance)
    api.force_authenticate(compliance)
    response = api.post(
        f"{BASE}/consents/{old.pk}/supersede/",
        {**consent_form(person), "reason": "Extended to France"},
        format="multipart",
    )
    assert response.status_code == 201, response.json()
    new = response.json()
    assert new["supersedes"] == old.pk
    detail = api.get(f"{BASE}/consents/{old.pk}/").json()
    assert detail["status"] == "superseded"
    assert detail["superseded_by"] == new["id"]
    assert detail["end_reason"] == "Extended to France"
    assert detail["is_valid_now"] is False

    response = api.post(f"{BASE}/consents/{old.pk}/revoke/", {"reason": "x"}, format="json")
    assert response.status_code == 409
    assert response.json() == {
        "error": {
            "code": "consent_not_active",
            "message": f"Consent #{old.pk} is superseded; only an active consent can be revoked.",
            "consent_id": old.pk,
            "status": "superseded",
            "superseded_by": new["id"],
        }
    }
    response = api.post(f"{BASE}/consents/{new['id']}/revoke/", {}, format="json")
    assert response.status_code == 400
    assert response.json()["error"]["fields"] == {"reason": ["This field is required."]}
    response = api.post(
        f"{BASE}/consents/{new['id']}/revoke/", {"reason": "Withdrawn"}, format="json"
    )
    assert response.status_code == 200
    assert response.json()["status"] == "revoked"
    assert response.json()["ended_by"] == compliance.pk


def test_evidence_downloads_are_checked_and_audited(api, compliance, reviewer, media_root):
    person = create_person(acting_user=compliance)
    consent = create_consent(person=person, acting_user=compliance)
    api.force_authenticate(reviewer)

    response = api.get(
        f"{BASE}/consents/{consent.pk}/evidence/signed-form/", HTTP_ACCEPT="application/pdf"
    )
    assert response.status_code == 200
    assert b"".join(response.streaming_content) == pdf_bytes()
    assert response["Content-Type"] == "application/pdf"
    assert response["X-Content-SHA256"] == hashlib.sha256(pdf_bytes()).hexdigest()
    assert response["Content-Disposition"] == (
        f'attachment; filename="signed_form-{consent.signed_form.public_id}.pdf"'
    )
    assert response["Cache-Control"] == "no-store"
    event = AuditEvent.objects.get(action=AuditAction.CONSENT_EVIDENCE_DOWNLOAD)
    assert (event.actor, event.target_id, event.payload["kind"]) == (
        reviewer,
        str(consent.pk),
        "signed_form",
    )

    photo = api.get(f"{BASE}/persons/{person.pk}/reference-photo/")
    assert photo.status_code == 200
    assert b"".join(photo.streaming_content) == jpeg_bytes()
    assert (
        AuditEvent.objects.filter(action=AuditAction.PERSON_REFERENCE_PHOTO_DOWNLOAD).count() == 1
    )

    # No video was recorded, and "passport" is no kind of evidence.
    assert api.get(f"{BASE}/consents/{consent.pk}/evidence/statement-video/").status_code == 404
    assert api.get(f"{BASE}/consents/{consent.pk}/evidence/passport/").status_code == 404

    # A file changed in storage is refused, and no download is recorded.
    Path(media_root / consent.signed_form.file.name).write_bytes(b"%PDF-1.4 forged")
    response = api.get(f"{BASE}/consents/{consent.pk}/evidence/signed-form/")
    assert response.status_code == 500
    assert response.json()["error"]["code"] == "evidence_integrity_failed"
    assert AuditEvent.objects.filter(action=AuditAction.CONSENT_EVIDENCE_DOWNLOAD).count() == 1
