"""Persons and consents through the services: what is written, what is refused (with nothing
written), which condition consent_assert_valid names, and the revocation hook."""

from __future__ import annotations

import hashlib
from datetime import timedelta
from pathlib import Path

import pytest
from django.core.exceptions import ValidationError
from django.db import connection

from config.api import ApplicationError
from governance.audit_codes import AuditAction
from governance.hooks import (
    ConsentRevocation,
    HookFailedError,
    register_consent_revocation_handler,
    unregister_consent_revocation_handler,
)
from governance.models import (
    AuditEvent,
    ConsentRecord,
    ConsentRole,
    ConsentStatus,
    EvidenceFile,
    Person,
    Purpose,
)
from governance.roles import Role
from governance.selectors.consents import ConsentCondition, ConsentInvalidError
from governance.services.consents import consent_assert_valid, consent_revoke, consent_supersede
from governance.services.evidence import sniff_content_type
from governance.services.roles import role_grant
from tests.factories import (
    UserFactory,
    create_consent,
    create_person,
    form_upload,
    jpeg_bytes,
    mov_bytes,
    mp4_bytes,
    pdf_bytes,
    png_bytes,
    upload,
    video_upload,
    webm_bytes,
    webp_bytes,
)

pytestmark = pytest.mark.django_db


def stored_files(media_root: Path) -> list[Path]:
    return [path for path in media_root.rglob("*") if path.is_file()]


def test_person_create_stores_the_photo_hashed_and_audits_without_the_name(compliance, media_root):
    person = create_person(
        acting_user=compliance,
        full_name="Grace Example",
        reference_photo=upload(jpeg_bytes(), "grace-example.jpg", "image/jpeg"),
    )

    photo = person.reference_photo
    assert photo.sha256 == hashlib.sha256(jpeg_bytes()).hexdigest()
    assert photo.size_bytes == len(jpeg_bytes())
    assert photo.content_type == "image/jpeg"
    assert photo.uploaded_by == compliance
    assert person.identity_verified_by == compliance
    assert (media_root / photo.file.name).read_bytes() == jpeg_bytes()
    # Random storage name, the original name is not part of the path.
    assert "grace" not in photo.file.name
    assert photo.original_name == "grace-example.jpg"
    event = AuditEvent.objects.get(action=AuditAction.PERSON_CREATE)
    assert (event.actor, event.target_type, event.target_id) == (
        compliance,
        "governance.person",
        str(person.pk),
    )
    assert event.payload["reference_photo"]["sha256"] == photo.sha256
    assert "Grace" not in str(event.payload)


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (jpeg_bytes, "image/jpeg"),
        (png_bytes, "image/png"),
        (webp_bytes, "image/webp"),
        (pdf_bytes, "application/pdf"),
        (mp4_bytes, "video/mp4"),
        (mov_bytes, "video/quicktime"),
        (webm_bytes, "video/webm"),
    ],
)
def test_content_types_are_recognised_from_real_files(data, expected):
    assert sniff_content_type(data()[:64]) == expected


@pytest.mark.parametrize("make", [png_bytes, webp_bytes])
def test_png_and_webp_are_accepted_as_reference_photos(compliance, make):
    person = create_person(acting_user=compliance, reference_photo=upload(make(), "x.bin"))
    assert person.reference_photo.sha256 == hashlib.sha256(make()).hexdigest()


def test_person_with_a_pdf_named_like_a_photo_is_refused_and_nothing_is_written(
    compliance, media_root
):
    before = AuditEvent.objects.count()
    with pytest.raises(ValidationError) as info:
        create_person(
            acting_user=compliance,
            reference_photo=upload(pdf_bytes(), "photo.jpg", "image/jpeg"),
        )
    assert "application/pdf" in info.value.message_dict["reference_photo"][0]
    assert "image/jpeg" in info.value.message_dict["reference_photo"][0]
    assert Person.objects.count() == 0
    assert EvidenceFile.objects.count() == 0
    assert AuditEvent.objects.count() == before
    assert stored_files(media_root) == []


def test_person_needs_a_name_and_a_verification_note(compliance):
    with pytest.raises(ValidationError) as info:
        create_person(acting_user=compliance, full_name=" ", identity_verification_note="")
    assert set(info.value.message_dict) == {"full_name", "identity_verification_note"}


def test_consent_record_create_writes_scope_evidence_and_audit(compliance):
    person = create_person(acting_user=compliance)
    consent = create_consent(
        person=person,
        acting_user=compliance,
        role=ConsentRole.BOTH,
        purposes=["marketing", "research", "marketing"],
        channels=["social"],
        territories=["ww"],
        commercial_use=True,
        statement_video=video_upload(),
    )

    assert consent.status == ConsentStatus.ACTIVE
    assert consent.recorded_by == compliance
    assert sorted(consent.purposes.values_list("code", flat=True)) == ["marketing", "research"]
    assert list(consent.territories.values_list("code", flat=True)) == ["WW"]
    assert consent.signed_form.sha256 == hashlib.sha256(pdf_bytes()).hexdigest()
    assert consent.statement_video.sha256 == hashlib.sha256(mp4_bytes()).hexdigest()
    assert consent.statement_video.content_type == "video/mp4"
    event = AuditEvent.objects.get(action=AuditAction.CONSENT_RECORD)
    assert event.target_id == str(consent.pk)
    assert event.payload["purposes"] == ["marketing", "research"]
    assert event.payload["commercial_use"] is True
    assert [e["kind"] for e in event.payload["evidence"]] == ["signed_form", "statement_video"]
    assert event.payload["supersedes"] is None


@pytest.mark.parametrize(
    ("overrides", "field", "message"),
    [
        ({"purposes": []}, "purposes", "At least one of the purposes is required."),
        ({"channels": []}, "channels", "At least one of the channels is required."),
        ({"territories": []}, "territories", "At least one of the territories is required."),
        ({"purposes": ["astrology"]}, "purposes", "Unknown purposes: astrology."),
        ({"territories": ["XX"]}, "territories", "Unknown territories: XX."),
        (
            {"purposes": ["marketing"], "commercial_use": False},
            "purposes",
            "Purposes marketing are commercial, but the consent does not allow commercial use.",
        ),
        (
            {"territories": ["WW", "DE"]},
            "territories",
            "WW (worldwide) already covers every territory",
        ),
        ({"role": "bystander"}, "role", "Role must be one of"),
        ({"valid_until": "yesterday"}, "valid_until", "The validity ends before it starts."),
        ({"signed_form": None}, "evidence", "Attach the signed consent form"),
        (
            {"signed_form": upload(png_bytes(), "form.pdf", "application/pdf")},
            "signed_form",
            "The file's content is image/png; expected application/pdf.",
        ),
        (
            {"signed_form": None, "statement_video": upload(b"just some text", "v.mp4")},
            "statement_video",
            "The file's content is an unrecognised format",
        ),
        (
            {"signed_form": upload(b"", "empty.pdf")},
            "signed_form",
            "The file is empty.",
        ),
    ],
)
def test_bad_consent_input_is_refused_with_a_clear_message_and_nothing_written(
    compliance, media_root, overrides, field, message
):
    person = create_person(acting_user=compliance)
    before = (
        AuditEvent.objects.count(),
        EvidenceFile.objects.count(),
        len(stored_files(media_root)),
    )
    if overrides.get("valid_until") == "yesterday":
        overrides = {**overrides, "valid_until": person.created_at - timedelta(days=2)}
    with pytest.raises(ValidationError) as info:
        create_consent(person=person, acting_user=compliance, **overrides)
    assert any(message in text for text in info.value.message_dict[field]), info.value
    assert ConsentRecord.objects.count() == 0
    after = (
        AuditEvent.objects.count(),
        EvidenceFile.objects.count(),
        len(stored_files(media_root)),
    )
    assert after == before


def test_evidence_over_the_size_limit_is_refused(compliance, settings, media_root):
    person = create_person(acting_user=compliance)
    settings.GOVERNANCE_EVIDENCE_MAX_DOCUMENT_BYTES = len(pdf_bytes()) - 1
    with pytest.raises(ValidationError) as info:
        create_consent(person=person, acting_user=compliance)
    assert "the limit is" in info.value.message_dict["signed_form"][0]
    assert ConsentRecord.objects.count() == 0
    settings.GOVERNANCE_EVIDENCE_MAX_DOCUMENT_BYTES = len(pdf_bytes())
    assert create_consent(person=person, acting_user=compliance).signed_form.size_bytes == len(
        pdf_bytes()
    )


def test_a_failure_after_files_were_stored_removes_them(compliance, media_root):
    """A database constraint refuses the consent row after both evidence files were written:
    the transaction rolls back and the files are deleted again."""
    person = create_person(acting_user=compliance)
    files_before = stored_files(media_root)
    with connection.cursor() as cursor:
        # Make the insert fail inside the transaction, after evidence_store wrote the files.
        cursor.execute(
            "ALTER TABLE governance_consentrecord ADD CONSTRAINT test_no_notes "
            "CHECK (notes <> 'fail here')"
        )
    with pytest.raises(Exception, match="test_no_notes"):
        create_consent(
            person=person,
            acting_user=compliance,
            notes="fail here",
            statement_video=video_upload(),
        )
    assert stored_files(media_root) == files_before
    assert EvidenceFile.objects.count() == 1  # the photo


def _assert_condition(condition, **query):
    with pytest.raises(ConsentInvalidError) as info:
        consent_assert_valid(**query)
    assert info.value.condition == condition, info.value.message
    assert info.value.code == "consent_invalid"
    assert info.value.status_code == 409
    assert info.value.extra["condition"] == condition.value
    return info.value


def test_consent_assert_valid_returns_the_covering_consent(compliance):
    person = create_person(acting_user=compliance)
    consent = create_consent(person=person, acting_user=compliance)
    found = consent_assert_valid(
        person=person,
        role="portrait_subject",
        purpose="research",
        channel="web",
        territory="fr",
    )
    assert found == consent


def test_consent_assert_valid_names_each_failing_condition(compliance):
    person = create_person(acting_user=compliance)
    base = {"person": person, "role": "portrait_subject", "purpose": "research", "channel": "web"}
    _assert_condition(ConsentCondition.NO_CONSENT, **base, territory="DE")

    consent = create_consent(person=person, acting_user=compliance)
    error = _assert_condition(ConsentCondition.TERRITORY, **base, territory="US")
    assert error.message == (
        f"Consent #{consent.pk} of person #{person.pk} does not cover the territory US "
        "(it covers: DE, FR)."
    )
    assert error.consent_id == consent.pk
    _assert_condition(ConsentCondition.TERRITORY, **base, territory="WW")
    _assert_condition(
        ConsentCondition.ROLE, **{**base, "role": "driving_performer"}, territory="DE"
    )
    _assert_condition(ConsentCondition.PURPOSE, **{**base, "purpose": "marketing"}, territory="DE")
    _assert_condition(ConsentCondition.CHANNEL, **{**base, "channel": "broadcast"}, territory="DE")
    _assert_condition(
        ConsentCondition.NOT_YET_VALID,
        **base,
        territory="DE",
        at=consent.valid_from - timedelta(seconds=1),
    )
    _assert_condition(ConsentCondition.EXPIRED, **base, territory="DE", at=consent.valid_until)

    # A purpose that became commercial after the consent was recorded is no longer covered.
    Purpose.objects.filter(pk="research").update(is_commercial=True)
    _assert_condition(ConsentCondition.COMMERCIAL, **base, territory="DE")


def test_worldwide_consent_for_both_roles_covers_any_territory_and_role(compliance):
    person = create_person(acting_user=compliance)
    create_consent(person=person, acting_user=compliance, role="both", territories=["WW"])
    for role in ("portrait_subject", "driving_performer"):
        for territory in ("US", "JP", "WW"):
            consent_assert_valid(
                person=person.pk, role=role, purpose="research", channel="web", territory=territory
            )


def test_consent_assert_valid_refuses_unknown_queries(compliance):
    person = create_person(acting_user=compliance)
    with pytest.raises(ValidationError, match="portrait_subject or driving_performer"):
        consent_assert_valid(
            person=person, role="both", purpose="research", channel="web", territory="DE"
        )
    with pytest.raises(ValidationError, match="Unknown purpose astrology"):
        consent_assert_valid(
            person=person,
            role="portrait_subject",
            purpose="astrology",
            channel="web",
            territory="DE",
        )


def test_revoke_ends_the_consent_audits_and_blocks_use(compliance):
    person = create_person(acting_user=compliance)
    consent = create_consent(person=person, acting_user=compliance)
    revoked = consent_revoke(consent=consent, reason="Withdrawn by email", acting_user=compliance)

    assert revoked.status == ConsentStatus.REVOKED
    assert revoked.ended_by == compliance
    assert revoked.end_reason == "Withdrawn by email"
    event = AuditEvent.objects.get(action=AuditAction.CONSENT_REVOKE)
    assert event.payload == {"person_id": person.pk, "reason": "Withdrawn by email"}
    query = {"person": person, "role": "portrait_subject", "purpose": "research", "channel": "web"}
    error = _assert_condition(ConsentCondition.REVOKED, **query, territory="DE")
    assert "was revoked at" in error.message
    # As it stood before the revocation, the consent covered the use.
    assert consent_assert_valid(**query, territory="DE", at=revoked.ended_at - timedelta(seconds=1))


def test_revoke_needs_a_reason_and_an_active_consent(compliance):
    person = create_person(acting_user=compliance)
    consent = create_consent(person=person, acting_user=compliance)
    with pytest.raises(ValidationError, match="Give the reason for the revocation."):
        consent_revoke(consent=consent, reason="  ", acting_user=compliance)
    consent_revoke(consent=consent, reason="withdrawn", acting_user=compliance)
    with pytest.raises(ApplicationError) as info:
        consent_revoke(consent=consent, reason="again", acting_user=compliance)
    assert info.value.code == "consent_not_active"
    assert info.value.status_code == 409
    assert info.value.message == (
        f"Consent #{consent.pk} is revoked; only an active consent can be revoked."
    )
    assert AuditEvent.objects.filter(action=AuditAction.CONSENT_REVOKE).count() == 1


def test_supersede_links_old_and_new_and_keeps_the_old_record_unchanged(compliance):
    person = create_person(acting_user=compliance)
    old = create_consent(person=person, acting_user=compliance)
    old_scope = sorted(old.purposes.values_list("code", flat=True))
    new = consent_supersede(
        consent=old,
        reason="Adds marketing",
        role="portrait_subject",
        purposes=["research", "marketing"],
        channels=["web", "social"],
        territories=["DE"],
        commercial_use=True,
        valid_from=old.valid_from,
        signed_form=form_upload(),
        acting_user=compliance,
    )
    old.refresh_from_db()
    assert old.status == ConsentStatus.SUPERSEDED
    assert old.superseded_by == new
    assert new.supersedes == old
    assert old.end_reason == "Adds marketing"
    assert sorted(old.purposes.values_list("code", flat=True)) == old_scope
    assert new.valid_until is None
    supersede_event = AuditEvent.objects.get(action=AuditAction.CONSENT_SUPERSEDE)
    assert supersede_event.payload["superseded_by"] == new.pk
    assert (
        consent_assert_valid(
            person=person,
            role="portrait_subject",
            purpose="marketing",
            channel="social",
            territory="DE",
        )
        == new
    )
    # The old record no longer covers what only it covered.
    _assert_condition(
        ConsentCondition.CHANNEL,
        person=person,
        role="portrait_subject",
        purpose="research",
        channel="internal",
        territory="DE",
    )
    with pytest.raises(ApplicationError) as info:
        consent_revoke(consent=old, reason="x", acting_user=compliance)
    assert info.value.extra["superseded_by"] == new.pk


@pytest.fixture
def revocations():
    seen: list[ConsentRevocation] = []
    uid = register_consent_revocation_handler(seen.append, uid="test.record")
    yield seen
    unregister_consent_revocation_handler(uid)


def test_revocation_handlers_run_inside_the_revoking_transaction(compliance, revocations):
    person = create_person(acting_user=compliance)
    consent = create_consent(person=person, acting_user=compliance)
    states = []

    def look(event: ConsentRevocation) -> None:
        # Inside the transaction: the revocation and its audit event are already visible.
        states.append(
            (
                connection.in_atomic_block,
                ConsentRecord.objects.get(pk=event.consent_id).status,
                AuditEvent.objects.filter(
                    action=AuditAction.CONSENT_REVOKE, target_id=str(event.consent_id)
                ).exists(),
            )
        )

    uid = register_consent_revocation_handler(look)
    try:
        consent_revoke(consent=consent, reason="withdrawn", acting_user=compliance)
    finally:
        unregister_consent_revocation_handler(uid)
    assert states == [(True, ConsentStatus.REVOKED, True)]
    assert revocations == [
        ConsentRevocation(
            consent_id=consent.pk,
            person_id=person.pk,
            acting_user_id=compliance.pk,
            reason="withdrawn",
            revoked_at=ConsentRecord.objects.get(pk=consent.pk).ended_at,
            superseded_by_id=None,
        )
    ]


def test_supersession_tells_revocation_handlers_the_replacement(compliance, revocations):
    person = create_person(acting_user=compliance)
    old = create_consent(person=person, acting_user=compliance)
    new = consent_supersede(
        consent=old,
        reason="new form",
        role="both",
        purposes=["research"],
        channels=["web"],
        territories=["DE"],
        commercial_use=False,
        valid_from=old.valid_from,
        signed_form=form_upload(),
        acting_user=compliance,
    )
    assert [(r.consent_id, r.superseded_by_id, r.reason) for r in revocations] == [
        (old.pk, new.pk, "new form")
    ]


def test_a_failing_revocation_handler_leaves_nothing_revoked(compliance, revocations):
    person = create_person(acting_user=compliance)
    consent = create_consent(person=person, acting_user=compliance)
    bystander = UserFactory()
    events_before = AuditEvent.objects.count()

    def write(event: ConsentRevocation) -> None:
        # A handler's own (audited) writes roll back with the revocation.
        role_grant(user=bystander, role=Role.REVIEWER, acting_user=compliance)

    def fail(event: ConsentRevocation) -> None:
        raise RuntimeError("cannot reach the job queue")

    uids = [register_consent_revocation_handler(write)]
    uids.append(register_consent_revocation_handler(fail))
    try:
        with pytest.raises(HookFailedError) as info:
            consent_revoke(consent=consent, reason="withdrawn", acting_user=compliance)
    finally:
        for uid in uids:
            unregister_consent_revocation_handler(uid)
    assert info.value.status_code == 500
    assert info.value.code == "hook_failed"
    assert info.value.extra["handler"].endswith(".fail")
    assert info.value.message.startswith("The consent revocation handler ")
    assert str(info.value.__cause__) == "cannot reach the job queue"
    consent.refresh_from_db()
    assert consent.status == ConsentStatus.ACTIVE
    assert consent.ended_at is None
    assert bystander.role_names == []
    assert AuditEvent.objects.count() == events_before
    # The record handler registered before the failing ones saw the event, then it was undone.
    assert [r.consent_id for r in revocations] == [consent.pk]


def test_registering_a_handler_twice_keeps_one(revocations):
    from governance.hooks import consent_revocation_handlers

    register_consent_revocation_handler(revocations.append, uid="test.record")
    assert [uid for uid, _ in consent_revocation_handlers.handlers()].count("test.record") == 1
