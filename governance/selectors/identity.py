"""Reads for identity checks: face-match records, leakage reports and what they allow."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from django.db.models import Q, QuerySet
from django.utils import timezone
from rest_framework import status

from config.api import ApplicationError
from governance.models import (
    FaceMatchRecord,
    FaceThresholdPolicy,
    LeakageReport,
    LeakageReviewDecision,
    LeakageVerdict,
    Purpose,
    Territory,
)
from governance.selectors.registry import (
    license_use_problem,
    purpose_needed_use,
    territory_code_of,
)

LEAKAGE_NOT_CLEARED = (
    "The output of {subject} is not cleared by the identity-leakage gate: {state}."
)


def face_threshold_policy_list() -> QuerySet[FaceThresholdPolicy]:
    return FaceThresholdPolicy.objects.select_related("licence")


def face_threshold_policy_get(*, backend: str) -> FaceThresholdPolicy | None:
    return face_threshold_policy_list().filter(backend=backend).first()


class FaceBackendUnusableError(ApplicationError):
    """The configured face recogniser may not check faces for this purpose (409): its weights'
    licence forbids it (``code == "face_backend_licence_forbids"``, with the failed
    ``condition``), or no licence is registered for it and the purpose is commercial
    (``"face_backend_unlicensed"``)."""

    def __init__(self, message: str, *, code: str, backend: str, **extra: object) -> None:
        super().__init__(
            message,
            code=code,
            extra={"backend": backend, **extra},
            status_code=status.HTTP_409_CONFLICT,
        )


@dataclass(frozen=True)
class FaceBackendClearance:
    """A passed face-recogniser licence check: the use it was checked for and the licence
    (None: none registered, allowed for non-commercial purposes only)."""

    backend: str
    use: str
    license_id: int | None


def face_backend_assert_usable(
    *,
    backend: str,
    purpose: Purpose | str,
    territory: Territory | str | None = None,
    at: datetime | None = None,
) -> FaceBackendClearance:
    """Whether the face recogniser ``backend`` may check faces for a job of ``purpose``.

    The recogniser processes the portrait subject's and the performer's faces for the job and
    decides whether its output may leave, so the licence of its pretrained weights (the
    ``licence`` of the backend's ``FaceThresholdPolicy``) must cover the purpose exactly as a
    model's lineage must (``license_use_problem``: in force at ``at``, covering ``territory``,
    allowing ``commercial_output`` for a commercial purpose, ``research_output`` otherwise).
    insightface's packs are non-commercial, so a commercial job is refused while the platform
    runs on them, before any face is processed. A backend without a registered licence (new,
    or never linked) may serve non-commercial purposes only: commercial use needs terms on
    record. Raises ``FaceBackendUnusableError`` (409).
    """
    at = at or timezone.now()
    if isinstance(purpose, str):
        purpose = Purpose.objects.get(pk=purpose)
    code = territory_code_of(territory)
    use = purpose_needed_use(purpose)
    policy = face_threshold_policy_get(backend=backend)
    licence = policy.licence if policy is not None else None
    if licence is None:
        if purpose.is_commercial:
            raise FaceBackendUnusableError(
                f"The face recogniser {backend!r} has no registered licence, so it may not check "
                f"faces for the commercial purpose {purpose.pk}. A compliance officer links its "
                "weights' licence to the backend (POST /api/governance/identity/face-thresholds/"
                f"{backend}/licence/), or the platform runs another FACE_BACKEND.",
                code="face_backend_unlicensed",
                backend=backend,
                use=use,
            )
        return FaceBackendClearance(backend=backend, use=use, license_id=None)
    problem = license_use_problem(licence=licence, purpose=purpose, territory=code, at=at)
    if problem is not None:
        condition, detail = problem
        raise FaceBackendUnusableError(
            f"The licence {licence.name} of the face recogniser {backend!r} {detail}; it may "
            "not check faces for this job. Use a face backend licensed for the purpose "
            "(FACE_BACKEND) or link a licence that covers it.",
            code="face_backend_licence_forbids",
            backend=backend,
            license_id=licence.pk,
            license_name=licence.name,
            condition=condition,
            use=use,
        )
    return FaceBackendClearance(backend=backend, use=use, license_id=licence.pk)


def face_match_record_list(
    *,
    subject_type: str | None = None,
    subject_id: str | None = None,
    person_id: int | None = None,
    verdict: str | None = None,
) -> QuerySet[FaceMatchRecord]:
    qs = FaceMatchRecord.objects.all()
    if subject_type:
        qs = qs.filter(subject_type=subject_type)
    if subject_id:
        qs = qs.filter(subject_id=subject_id)
    if person_id is not None:
        qs = qs.filter(person_id=person_id)
    if verdict:
        qs = qs.filter(verdict=verdict)
    return qs


def leakage_report_list(
    *,
    subject_type: str | None = None,
    subject_id: str | None = None,
    verdict: str | None = None,
    awaiting_review: bool | None = None,
) -> QuerySet[LeakageReport]:
    """Reports, newest first. ``awaiting_review``: review verdicts not decided yet (True) or
    everything else (False)."""
    qs = LeakageReport.objects.all()
    if subject_type:
        qs = qs.filter(subject_type=subject_type)
    if subject_id:
        qs = qs.filter(subject_id=subject_id)
    if verdict:
        qs = qs.filter(verdict=verdict)
    pending = Q(verdict=LeakageVerdict.REVIEW, review_decision="")
    if awaiting_review is True:
        qs = qs.filter(pending)
    elif awaiting_review is False:
        qs = qs.exclude(pending)
    return qs


def leakage_report_get(*, report_id: int) -> LeakageReport | None:
    return LeakageReport.objects.filter(pk=report_id).first()


def leakage_report_latest(*, subject_type: str, subject_id: int | str) -> LeakageReport | None:
    return leakage_report_list(subject_type=subject_type, subject_id=str(subject_id)).first()


def leakage_report_outcome(report: LeakageReport) -> str:
    """``cleared`` (pass, or released after review), ``awaiting_review`` or ``quarantined``
    (fail, or rejected after review)."""
    if report.verdict == LeakageVerdict.PASS:
        return "cleared"
    if report.verdict == LeakageVerdict.REVIEW:
        if report.review_decision == LeakageReviewDecision.RELEASE:
            return "cleared"
        if not report.review_decision:
            return "awaiting_review"
    return "quarantined"


def leakage_report_assert_cleared(*, subject_type: str, subject_id: int | str) -> LeakageReport:
    """The subject's latest report, if it clears the output for publication; else an
    ``ApplicationError`` (409 ``leakage_not_cleared``). Call before publishing."""
    report = leakage_report_latest(subject_type=subject_type, subject_id=subject_id)
    subject = f"{subject_type}:{subject_id}"
    if report is None:
        state = "it has not been checked"
    else:
        outcome = leakage_report_outcome(report)
        if outcome == "cleared":
            return report
        state = f"report #{report.pk} is {report.verdict}" + (
            ", rejected after review" if report.review_decision else ""
        )
        if outcome == "awaiting_review":
            state += " and awaits a compliance officer's decision"
    raise ApplicationError(
        LEAKAGE_NOT_CLEARED.format(subject=subject, state=state),
        code="leakage_not_cleared",
        extra={"leakage_report_id": report.pk if report else None},
        status_code=status.HTTP_409_CONFLICT,
    )
