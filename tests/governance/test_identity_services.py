"""Identity checks through the services: face-bound consent at submission, the leakage gate's
rules, review by compliance officers, thresholds per backend, and the licences behind them.

Scores come in exactly as the engine hands them over (``MatchScores``/``LeakageMeasurement``
built directly and turned into plain dicts with their own ``to_dict``); the photos behind
such scores are exercised in tests/governance/test_identity_gate.py.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from config.api import ApplicationError
from governance.audit_codes import AuditAction
from governance.hooks import (
    HookFailedError,
    LeakageReviewed,
    leakage_review_handlers,
    register_leakage_review_handler,
    unregister_leakage_review_handler,
)
from governance.models import (
    AuditEvent,
    FaceMatchRecord,
    FaceThresholdPolicy,
    LeakageReport,
    License,
    Person,
    User,
)
from governance.roles import Role
from governance.selectors.audit import audit_chain_verify
from governance.selectors.identity import (
    face_match_record_list,
    leakage_report_assert_cleared,
    leakage_report_list,
    leakage_report_outcome,
)
from governance.services.identity import (
    FaceMismatchError,
    face_match_evaluate,
    face_threshold_policy_update,
    leakage_report_create,
    leakage_report_reject,
    leakage_report_release,
)
from reenactment.engine import faces
from reenactment.engine.identity import (
    LeakageMeasurement,
    LeakageSample,
    MatchScores,
    series_stats,
)
from tests.factories import UserFactory, create_approval_request, create_person, create_policy

pytestmark = pytest.mark.django_db

SUBJECT = "reenactment.renderjob"

#: The dlib backend's description without loading it: its fingerprint is fixed by the pinned
#: model hashes, so these are the very values ``get_face_backend("dlib").info`` gives.
DLIB_INFO = faces.BackendInfo(
    name="dlib",
    metric="euclidean",
    thresholds=faces.DLIB_THRESHOLDS,
    embedding_dim=128,
    fingerprint=faces.fingerprint_of("dlib", faces.DLIB_MODEL_SHA256),
    files=faces.DLIB_MODEL_SHA256,
    licence=faces.DLIB_LICENCE,
    config={"detector": "hog+mmod", "upsample": 1},
).to_dict()


def scores(*similarities: float | None, multiple_faces: int = 0) -> dict[str, Any]:
    return MatchScores(
        similarities=tuple(similarities),
        multiple_faces=multiple_faces,
        stats=series_stats(similarities),
        backend="dlib",
        fingerprint=DLIB_INFO["fingerprint"],
    ).to_dict()


def measurement(
    portrait: Sequence[float | None],
    performer: Sequence[float | None] | None = None,
    *,
    baseline: float = 0.18,
    total: int | None = None,
) -> dict[str, Any]:
    """A leakage measurement over evenly spread frames (performer: baseline when omitted)."""
    performer = performer or [None if p is None else baseline for p in portrait]
    total = total or len(portrait)
    step = total // len(portrait)
    samples = tuple(
        LeakageSample(
            frame=i * step, t=i * step / 25, portrait_similarity=p, performer_similarity=q
        )
        for i, (p, q) in enumerate(zip(portrait, performer, strict=True))
    )
    return LeakageMeasurement(
        samples=samples,
        total_frames=total,
        baseline_similarity=baseline,
        portrait=series_stats(s.portrait_similarity for s in samples),
        performer=series_stats(s.performer_similarity for s in samples),
        backend="dlib",
        fingerprint=DLIB_INFO["fingerprint"],
        sampling="test",
    ).to_dict()


@pytest.fixture(autouse=True)
def _only_our_review_handlers() -> Iterator[None]:
    """The subjects here are not real render jobs: the jobs side's handlers stay out."""
    registered = leakage_review_handlers.handlers()
    for uid, _ in registered:
        leakage_review_handlers.unregister(uid)
    yield
    for uid, handler in registered:
        leakage_review_handlers.register(handler, uid=uid)


@pytest.fixture
def person(compliance: User) -> Person:
    return create_person(acting_user=compliance)


def evaluate(person: Person, data: dict[str, Any], **overrides: Any) -> FaceMatchRecord:
    values: dict[str, Any] = {
        "subject_type": SUBJECT,
        "subject_id": 41,
        "person": person,
        "check": "portrait_vs_subject",
        "scores": data,
        "backend_info": DLIB_INFO,
        "acting_user": None,
    }
    values.update(overrides)
    return face_match_evaluate(**values)


def report(verdict_input: dict[str, Any], subject_id: int | str = 7) -> LeakageReport:
    return leakage_report_create(
        subject_type=SUBJECT,
        subject_id=subject_id,
        measurement=verdict_input,
        backend_info=DLIB_INFO,
        acting_user=None,
    )


# --- thresholds and licences ------------------------------------------------------------------


def test_seeded_thresholds_are_the_backends_declarations():
    dlib = FaceThresholdPolicy.objects.get(backend="dlib")
    insightface = FaceThresholdPolicy.objects.get(backend="insightface")
    assert (dlib.match_threshold, dlib.review_threshold) == (
        faces.DLIB_THRESHOLDS.match,
        faces.DLIB_THRESHOLDS.review,
    )
    assert (insightface.match_threshold, insightface.review_threshold) == (
        faces.INSIGHTFACE_THRESHOLDS.match,
        faces.INSIGHTFACE_THRESHOLDS.review,
    )
    assert dlib.licence_text == faces.DLIB_LICENCE
    assert insightface.licence_text == faces.INSIGHTFACE_LICENCE
    for policy in (dlib, insightface):
        assert (policy.leakage_margin, policy.leakage_review_margin) == (0.10, 0.05)
        assert (policy.max_faceless_share, policy.min_sampled_frames) == (0.25, 8)


def test_the_insightface_packs_are_registered_as_non_commercial_research():
    insightface = FaceThresholdPolicy.objects.select_related("licence").get(backend="insightface")
    licence = insightface.licence
    assert licence is not None
    assert licence.name == "insightface pretrained packs (non-commercial research)"
    assert licence.allows_research_output and licence.allows_evaluation
    assert not licence.allows_commercial_output and not licence.allows_training
    assert list(licence.territories.values_list("code", flat=True)) == ["WW"]
    dlib = FaceThresholdPolicy.objects.select_related("licence").get(backend="dlib").licence
    assert dlib is not None and dlib.spdx_id == "CC0-1.0" and dlib.allows_commercial_output
    assert License.objects.filter(name__in=[licence.name, dlib.name]).count() == 2


def test_an_unknown_backend_gets_a_policy_from_its_declaration(person):
    info = {**DLIB_INFO, "name": "facenet", "thresholds": {"match": 0.7, "review": 0.6}}
    data = {**scores(0.9), "backend": "facenet"}

    record = evaluate(person, data, backend_info=info)

    policy = FaceThresholdPolicy.objects.get(backend="facenet")
    assert (policy.match_threshold, policy.review_threshold) == (0.7, 0.6)
    assert record.thresholds["match_threshold"] == 0.7
    event = AuditEvent.objects.get(action=AuditAction.FACE_THRESHOLD_POLICY_CREATE)
    assert event.actor is None and event.payload["backend"] == "facenet"


def test_a_compliance_officer_changes_thresholds_with_a_reason(compliance):
    policy = face_threshold_policy_update(
        backend="dlib",
        match_threshold=0.5,
        leakage_margin=0.08,
        reason="Stricter after the Q3 calibration.",
        acting_user=compliance,
    )

    assert (policy.match_threshold, policy.review_threshold, policy.leakage_margin) == (
        0.5,
        0.35,
        0.08,
    )
    assert policy.updated_by == compliance
    event = AuditEvent.objects.get(action=AuditAction.FACE_THRESHOLD_POLICY_UPDATE)
    assert event.actor == compliance
    assert event.payload == {
        "backend": "dlib",
        "old": {"match_threshold": 0.45, "leakage_margin": 0.1},
        "new": {"match_threshold": 0.5, "leakage_margin": 0.08},
        "reason": "Stricter after the Q3 calibration.",
    }


def test_threshold_changes_are_checked_and_need_a_reason_and_the_role(compliance, reviewer):
    with pytest.raises(ValidationError) as caught:
        face_threshold_policy_update(
            backend="dlib", review_threshold=0.6, reason="x", acting_user=compliance
        )
    assert "review_threshold" in caught.value.message_dict
    with pytest.raises(ValidationError) as caught:
        face_threshold_policy_update(
            backend="dlib", leakage_review_margin=0.2, reason="x", acting_user=compliance
        )
    assert "leakage_review_margin" in caught.value.message_dict
    with pytest.raises(ValidationError, match="reason"):
        face_threshold_policy_update(
            backend="dlib", match_threshold=0.5, reason=" ", acting_user=compliance
        )
    with pytest.raises(ApplicationError) as denied:
        face_threshold_policy_update(
            backend="dlib", match_threshold=0.5, reason="x", acting_user=reviewer
        )
    assert denied.value.status_code == 403
    assert not AuditEvent.objects.filter(action=AuditAction.FACE_THRESHOLD_POLICY_UPDATE).exists()
    assert FaceThresholdPolicy.objects.get(backend="dlib").match_threshold == 0.45


def test_the_database_refuses_a_review_band_above_the_match_threshold():
    with pytest.raises(IntegrityError), transaction.atomic():
        FaceThresholdPolicy.objects.filter(backend="dlib").update(review_threshold=0.9)


# --- face match at submission -----------------------------------------------------------------


def test_a_matching_portrait_is_recorded_with_scores_not_embeddings(person):
    record = evaluate(person, scores(0.82), candidate_sha256="ab" * 32, acting_user=None)

    assert record.verdict == "match" and record.reasons == []
    assert record.check_type == "portrait_vs_subject"
    assert record.scores["similarities"] == [0.82]
    assert record.scores["stats"]["median"] == 0.82
    assert record.reference_sha256 == person.reference_photo.sha256
    assert record.candidate_sha256 == "ab" * 32
    assert record.backend == "dlib" and record.backend_fingerprint == DLIB_INFO["fingerprint"]
    assert "CC0" in record.backend_licence
    assert record.thresholds["match_threshold"] == 0.45
    event = AuditEvent.objects.get(action=AuditAction.FACE_MATCH_RECORD)
    assert event.target_id == str(record.pk)
    assert event.payload["verdict"] == "match" and event.payload["person_id"] == person.pk
    assert event.payload["subject_id"] == "41"


def test_a_mismatching_portrait_is_refused_with_a_clear_message_and_kept_on_record(person):
    with pytest.raises(FaceMismatchError) as caught:
        evaluate(person, scores(0.18))

    error = caught.value
    assert error.code == "face_mismatch" and error.status_code == 422
    assert error.message.startswith("The portrait does not show the consenting portrait subject")
    assert f"person #{person.pk}" in error.message and "similarity 0.18" in error.message
    record = FaceMatchRecord.objects.get(pk=error.extra["face_match_id"])
    assert record.verdict == "no_match"
    assert record.reasons[0]["code"] == "face_mismatch"
    event = AuditEvent.objects.get(action=AuditAction.FACE_MATCH_REJECT)
    assert event.payload["verdict"] == "no_match" and event.target_id == str(record.pk)


def test_a_driving_video_of_someone_else_is_refused(person):
    with pytest.raises(FaceMismatchError, match="The driving video does not show the consenting"):
        evaluate(person, scores(0.2, 0.25, None, 0.22), check="driving_vs_performer")


def test_no_face_at_all_is_a_mismatch(person):
    with pytest.raises(FaceMismatchError, match="No face was found in the sampled frames"):
        evaluate(person, scores(None, None), check="driving_vs_performer")


@pytest.mark.parametrize(
    ("similarities", "multiple", "code"),
    [
        pytest.param((0.40,), 0, "similarity_in_review_band", id="review-band"),
        pytest.param((0.6, 0.55, 0.30, 0.6), 0, "some_frames_do_not_match", id="low-tail"),
        pytest.param((0.6, None, None, 0.6), 0, "faces_missing", id="faceless"),
        pytest.param((0.6, 0.6), 1, "multiple_faces", id="second-face"),
    ],
)
def test_doubtful_matches_go_to_review_without_refusing(person, similarities, multiple, code):
    record = evaluate(
        person, scores(*similarities, multiple_faces=multiple), check="driving_vs_performer"
    )
    assert record.verdict == "review"
    assert [reason["code"] for reason in record.reasons] == [code]
    assert face_match_record_list(subject_type=SUBJECT, verdict="review").get() == record


def test_inside_the_callers_transaction_the_mismatch_is_returned_not_raised(person):
    with transaction.atomic():
        record = evaluate(person, scores(0.1), raise_on_mismatch=False)
        assert record.verdict == "no_match"
        error = FaceMismatchError.from_record(record)
    assert error.extra["face_match_id"] == record.pk
    # The raising form commits on its own, so it refuses to run inside another transaction.
    with pytest.raises(RuntimeError, match="durable"), transaction.atomic():
        evaluate(person, scores(0.1))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        pytest.param({"fingerprint": "0" * 64}, "not from the described backend", id="fingerprint"),
        pytest.param({"backend": "insightface"}, "not from the described backend", id="backend"),
        pytest.param({"count": 3}, "count differs", id="count"),
        pytest.param({"no_face": 1}, "no_face differs", id="no-face"),
        pytest.param({"stats": {"count": 1, "mean": 0.5}}, "stats.mean", id="stats"),
        pytest.param({"similarities": [float("nan")]}, "finite", id="nan"),
    ],
)
def test_scores_that_do_not_add_up_are_refused(person, change, message):
    with pytest.raises(ValueError, match=message):
        evaluate(person, {**scores(0.8), **change})
    assert not FaceMatchRecord.objects.exists()


# --- the leakage gate -------------------------------------------------------------------------


def test_a_faithful_output_passes():
    created = report(measurement([0.9, 0.88, 0.85, 0.92, 0.9, 0.86, 0.91, 0.89], total=240))

    assert created.verdict == "pass" and created.reasons == []
    assert created.portrait_stats["min"] == 0.85
    assert created.performer_stats["mean"] == 0.18
    assert created.time_series[1] == {
        "frame": 30,
        "t": 1.2,
        "portrait_sim": 0.88,
        "performer_sim": 0.18,
    }
    assert created.thresholds["leakage_margin"] == 0.10
    assert leakage_report_outcome(created) == "cleared"
    event = AuditEvent.objects.get(action=AuditAction.LEAKAGE_REPORT_CREATE)
    assert event.payload["verdict"] == "pass" and event.payload["subject_id"] == "7"


HIGH = [0.9] * 8


@pytest.mark.parametrize(
    ("portrait", "performer", "verdict", "codes"),
    [
        pytest.param(HIGH, [0.75] * 8, "fail", ["identity_leak"], id="leak"),
        pytest.param(HIGH, [0.29] * 8, "fail", ["identity_leak"], id="leak-just-over-margin"),
        pytest.param(HIGH, [0.28] * 8, "review", ["identity_leak_suspected"], id="leak-at-margin"),
        pytest.param(HIGH, [0.25] * 8, "review", ["identity_leak_suspected"], id="suspected"),
        pytest.param(
            HIGH, [0.18] * 6 + [0.35, 0.35], "review", ["identity_leak_suspected"], id="leak-tail"
        ),
        pytest.param([0.3] * 8, None, "fail", ["identity_lost"], id="identity-lost"),
        pytest.param([0.4] * 8, None, "review", ["identity_weak"], id="identity-weak"),
        pytest.param([0.9] * 6 + [0.3] * 2, None, "review", ["identity_dips"], id="identity-dips"),
        pytest.param([0.9] * 7 + [0.3], None, "pass", [], id="one-dip-of-eight"),
        pytest.param(
            [0.9] * 5 + [None] * 3, None, "fail", ["faces_missing"], id="faceless-over-25%"
        ),
        pytest.param([0.9] * 6 + [None] * 2, None, "pass", [], id="faceless-25%"),
        pytest.param(
            [0.15] * 8, [0.8] * 8, "fail", ["identity_lost", "identity_leak"], id="performer-frames"
        ),
    ],
)
def test_the_gate_rules(portrait, performer, verdict, codes):
    created = report(measurement(portrait, performer))
    assert created.verdict == verdict
    assert [reason["code"] for reason in created.reasons] == codes
    assert all(reason["message"] for reason in created.reasons)


def test_an_output_that_is_the_performer_fails_even_with_a_wide_margin(compliance):
    face_threshold_policy_update(
        backend="dlib", leakage_margin=1.0, reason="Experiment.", acting_user=compliance
    )
    created = report(measurement(HIGH, [0.6] * 8))
    assert [reason["code"] for reason in created.reasons] == ["matches_performer"]
    assert created.verdict == "fail"


def test_look_alikes_are_judged_by_the_rise_not_the_level():
    """Portrait and performer look alike (baseline 0.42): a faithful output resembles the
    performer as much as the portrait does, which is no leak."""
    created = report(measurement(HIGH, [0.44] * 8, baseline=0.42))
    assert created.verdict == "pass"


def test_a_faceless_output_fails_for_missing_faces():
    created = report(measurement([None] * 8))
    assert created.verdict == "fail"
    assert [reason["code"] for reason in created.reasons] == ["faces_missing"]
    assert "8 of 8" in created.reasons[0]["message"]
    assert created.portrait_stats is None and created.faceless_share == 1.0


def test_too_few_samples_of_a_long_output_need_review():
    created = report(measurement(HIGH[:4], total=400))
    assert created.verdict == "review"
    assert [reason["code"] for reason in created.reasons] == ["too_few_samples"]
    # A four-frame output checked whole is as stable as it gets.
    assert report(measurement(HIGH[:4], total=4)).verdict == "pass"


def test_thresholds_used_stay_with_the_report(compliance):
    first = report(measurement([0.5] * 8))
    face_threshold_policy_update(
        backend="dlib",
        match_threshold=0.6,
        review_threshold=0.45,
        reason="x",
        acting_user=compliance,
    )
    second = report(measurement([0.5] * 8))
    first.refresh_from_db()
    assert (first.verdict, first.thresholds["match_threshold"]) == ("pass", 0.45)
    assert (second.verdict, second.thresholds["match_threshold"]) == ("review", 0.6)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        pytest.param({"fingerprint": "1" * 64}, "not from the described backend", id="fingerprint"),
        pytest.param({"sampled_frames": 9}, "sampled_frames", id="sampled"),
        pytest.param({"faceless_frames": 2}, "faceless_frames", id="faceless"),
        pytest.param({"total_frames": 3}, "total_frames", id="total"),
        pytest.param({"series": []}, "non-empty series", id="empty"),
        pytest.param({"baseline_similarity": None}, "baseline_similarity", id="baseline"),
    ],
)
def test_measurements_that_do_not_add_up_are_refused(change, message):
    data = {**measurement(HIGH), **change}
    with pytest.raises(ValueError, match=message):
        report(data)
    assert not LeakageReport.objects.exists()


def test_edited_statistics_are_refused():
    data = measurement(HIGH)
    data["portrait"] = {**data["portrait"], "min": 0.99}
    with pytest.raises(ValueError, match="portrait.min"):
        report(data)


def test_a_frame_with_one_similarity_is_refused():
    data = measurement(HIGH)
    data["series"][0] = {**data["series"][0], "performer_sim": None}
    with pytest.raises(ValueError, match="both similarities or neither"):
        report(data)


# --- review by compliance officers ------------------------------------------------------------


@pytest.fixture
def flagged() -> LeakageReport:
    created = report(measurement(HIGH, [0.25] * 8))
    assert created.verdict == "review"
    return created


@pytest.fixture
def reviewed() -> Iterator[list[LeakageReviewed]]:
    seen: list[LeakageReviewed] = []
    uid = register_leakage_review_handler(seen.append, uid="test.leakage_reviewed")
    yield seen
    unregister_leakage_review_handler(uid)


def test_a_compliance_officer_releases_a_flagged_output(flagged, compliance, reviewed):
    assert leakage_report_outcome(flagged) == "awaiting_review"
    with pytest.raises(ApplicationError, match="awaits a compliance officer"):
        leakage_report_assert_cleared(subject_type=SUBJECT, subject_id=7)

    released = leakage_report_release(
        report=flagged, reason="Lighting change; identity checked by eye.", acting_user=compliance
    )

    assert released.review_decision == "release" and released.reviewed_by == compliance
    assert leakage_report_outcome(released) == "cleared"
    assert leakage_report_assert_cleared(subject_type=SUBJECT, subject_id="7") == released
    event = AuditEvent.objects.get(action=AuditAction.LEAKAGE_REPORT_RELEASE)
    assert event.actor == compliance
    assert event.payload["reason"] == "Lighting change; identity checked by eye."
    assert [(e.report_id, e.decision, e.subject_id) for e in reviewed] == [
        (flagged.pk, "release", "7")
    ]


def test_a_compliance_officer_rejects_a_flagged_output(flagged, compliance, reviewed):
    rejected = leakage_report_reject(report=flagged, reason="Visible leak.", acting_user=compliance)
    assert rejected.review_decision == "reject"
    assert leakage_report_outcome(rejected) == "quarantined"
    assert AuditEvent.objects.filter(action=AuditAction.LEAKAGE_REPORT_REJECT).count() == 1
    assert [e.decision for e in reviewed] == ["reject"]
    with pytest.raises(ApplicationError, match="rejected after review") as caught:
        leakage_report_assert_cleared(subject_type=SUBJECT, subject_id=7)
    assert caught.value.code == "leakage_not_cleared"


def test_review_needs_a_reason_the_role_and_a_review_verdict(flagged, compliance, reviewer):
    with pytest.raises(ValidationError, match="reason"):
        leakage_report_release(report=flagged, reason="  ", acting_user=compliance)
    with pytest.raises(ApplicationError) as denied:
        leakage_report_release(report=flagged, reason="ok", acting_user=reviewer)
    assert (denied.value.code, denied.value.status_code) == ("leakage_review_not_allowed", 403)

    failed = report(measurement(HIGH, [0.8] * 8), subject_id=8)
    with pytest.raises(ApplicationError) as conflict:
        leakage_report_release(report=failed, reason="ok", acting_user=compliance)
    assert (conflict.value.code, conflict.value.status_code) == ("leakage_not_reviewable", 409)

    leakage_report_reject(report=flagged, reason="No.", acting_user=compliance)
    with pytest.raises(ApplicationError) as again:
        leakage_report_release(report=flagged, reason="Changed my mind.", acting_user=compliance)
    assert again.value.code == "leakage_already_reviewed"
    assert not AuditEvent.objects.filter(action=AuditAction.LEAKAGE_REPORT_RELEASE).exists()


def test_whoever_requested_the_output_cannot_release_it(compliance, users):
    create_policy(purpose="research", acting_user=compliance)
    officer = UserFactory(roles=[Role.COMPLIANCE_OFFICER, Role.REQUESTER])
    request = create_approval_request(requested_by=officer)
    flagged = report(measurement(HIGH, [0.25] * 8), subject_id=request.subject_id)

    with pytest.raises(ApplicationError) as caught:
        leakage_report_release(report=flagged, reason="Mine, fine.", acting_user=officer)
    assert caught.value.code == "leakage_requester_cannot_review"
    assert leakage_report_release(report=flagged, reason="Fine.", acting_user=compliance)


def test_a_failing_review_handler_undoes_the_decision(flagged, compliance):
    def broken(event: LeakageReviewed) -> None:
        raise RuntimeError("publisher down")

    uid = register_leakage_review_handler(broken, uid="test.broken")
    try:
        with pytest.raises(HookFailedError):
            leakage_report_release(report=flagged, reason="ok", acting_user=compliance)
    finally:
        unregister_leakage_review_handler(uid)
    flagged.refresh_from_db()
    assert flagged.review_decision == "" and flagged.reviewed_at is None
    assert not AuditEvent.objects.filter(action=AuditAction.LEAKAGE_REPORT_RELEASE).exists()


def test_the_database_refuses_a_decision_on_a_passing_report(compliance):
    passed = report(measurement(HIGH))
    with pytest.raises(IntegrityError), transaction.atomic():
        LeakageReport.objects.filter(pk=passed.pk).update(
            review_decision="release", review_reason="x", reviewed_by=compliance
        )


def test_listing_reports_awaiting_review(flagged, compliance):
    passed = report(measurement(HIGH), subject_id=9)
    assert list(leakage_report_list(awaiting_review=True)) == [flagged]
    assert list(leakage_report_list(awaiting_review=False)) == [passed]
    leakage_report_reject(report=flagged, reason="No.", acting_user=compliance)
    assert not leakage_report_list(awaiting_review=True).exists()


def test_an_unchecked_output_is_not_cleared():
    with pytest.raises(ApplicationError, match="it has not been checked"):
        leakage_report_assert_cleared(subject_type=SUBJECT, subject_id=12345)


def test_the_audit_trail_holds_no_embedding(person):
    evaluate(person, scores(0.8))
    report(measurement(HIGH))
    for event in AuditEvent.objects.filter(
        action__in=[AuditAction.FACE_MATCH_RECORD, AuditAction.LEAKAGE_REPORT_CREATE]
    ):
        assert "embedding" not in str(event.payload)
        assert all(not isinstance(v, list) or len(v) < 16 for v in event.payload.values())
    assert audit_chain_verify().ok
