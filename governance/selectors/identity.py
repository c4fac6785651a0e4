"""Reads for identity checks: face-match records, leakage reports and what they allow."""

from __future__ import annotations

from django.db.models import Q, QuerySet
from rest_framework import status

from config.api import ApplicationError
from governance.models import (
    FaceMatchRecord,
    FaceThresholdPolicy,
    LeakageReport,
    LeakageReviewDecision,
    LeakageVerdict,
)

LEAKAGE_NOT_CLEARED = (
    "The output of {subject} is not cleared by the identity-leakage gate: {state}."
)


def face_threshold_policy_list() -> QuerySet[FaceThresholdPolicy]:
    return FaceThresholdPolicy.objects.select_related("licence")


def face_threshold_policy_get(*, backend: str) -> FaceThresholdPolicy | None:
    return face_threshold_policy_list().filter(backend=backend).first()


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
