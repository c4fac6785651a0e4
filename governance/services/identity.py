"""Identity checks: face-bound consent at submission, the identity-leakage gate after
generation, and the thresholds both apply.

The engine measures (``reenactment.engine.identity``); these services decide and record.
They take the engine's results as plain mappings (``MatchScores.to_dict()``,
``LeakageMeasurement.to_dict()``, ``FaceBackend.info.to_dict()``): governance never imports
the engine (ARCHITECTURE.md §2), and nothing biometric reaches the database, only scores.

Verdict rules (thresholds from the backend's ``FaceThresholdPolicy``; similarities are
*higher = more similar*):

Face match (consent binding), over the candidates in which a face was found:

* no face in any candidate → ``no_match``;
* median similarity below ``review_threshold`` → ``no_match`` (refused: ``face_mismatch``);
* median below ``match_threshold`` → ``review``;
* any candidate below ``review_threshold`` (someone else in part of the driving video), more
  than ``max_faceless_share`` of the candidates without a face, or another face as large as
  the scored one → ``review``;
* otherwise ``match``.

``review`` does not refuse the submission: the record is kept and every render job goes
through human approval anyway, where the approvers see it (``face_match_record_list``).

Leakage gate, over the sampled output frames (the worst rule wins):

* more than ``max_faceless_share`` of the frames without a face → ``fail``;
* portrait similarity: mean below ``review_threshold`` → ``fail``; mean below
  ``match_threshold``, or its 10th percentile below it → ``review``;
* performer similarity against the portrait-performer baseline: mean rise above
  ``leakage_margin`` → ``fail``; mean at or above ``match_threshold`` while the baseline is
  below it (the output *is* the performer) → ``fail``; mean rise above
  ``leakage_review_margin``, or 90th-percentile rise above ``leakage_margin`` → ``review``;
* fewer than ``min_sampled_frames`` sampled while the output had more → ``review``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any, Final, TypedDict

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone
from rest_framework import status

from config.api import ApplicationError
from governance.audit_codes import AuditAction
from governance.hooks import LeakageReviewed, leakage_review_handlers
from governance.models import (
    ApprovalRequest,
    FaceMatchCheck,
    FaceMatchRecord,
    FaceMatchVerdict,
    FaceThresholdPolicy,
    LeakageReport,
    LeakageReviewDecision,
    LeakageVerdict,
    License,
    LicenseStatus,
    Person,
    User,
)
from governance.permissions import user_has_perm
from governance.services.audit import audit_event_record

__all__ = [
    "FaceMismatchError",
    "LeakageMeasurementData",
    "MatchScoresData",
    "face_match_evaluate",
    "face_threshold_policy_for_backend",
    "face_threshold_policy_licence_set",
    "face_threshold_policy_update",
    "leakage_report_create",
    "leakage_report_reject",
    "leakage_report_release",
]

# --- defaults ---------------------------------------------------------------------------------

#: Governance's defaults for a backend met for the first time (dlib and insightface are seeded
#: by migration 0007 with the same values): the match and review thresholds come from the
#: backend's own declaration; these are the rest. Measured with dlib on real photos
#: (tests/engine/test_identity.py, benchmarks/leakage.py): a faithful output's performer
#: similarity stays within +-0.02 of the baseline (90th percentile +0.02), blending 20 % of
#: the performer's face into the portrait raises it by 0.07, 30 % by 0.09, 40 % by 0.15 (with
#: the portrait similarity still a match at 0.55), a leaky output (the performer's frames) by
#: 0.57.
DEFAULT_LEAKAGE_MARGIN: Final[float] = 0.10
DEFAULT_LEAKAGE_REVIEW_MARGIN: Final[float] = 0.05
DEFAULT_MAX_FACELESS_SHARE: Final[float] = 0.25
DEFAULT_MIN_SAMPLED_FRAMES: Final[int] = 8

_SUBJECT_TYPE = re.compile(r"^[a-z][a-z0-9_]*\.[a-z][a-z0-9_]*$")
_FINGERPRINT = re.compile(r"^[0-9a-f]{64}$")
# Engine statistics are rounded to 6 decimals; anything further apart is not the same series.
_STATS_TOLERANCE: Final[float] = 1e-4

# --- messages ---------------------------------------------------------------------------------

FACE_MISMATCH_PORTRAIT = (
    "The portrait does not show the consenting portrait subject (person #{person}): its face "
    "does not match their consent reference photo (similarity {score:.2f} with {backend}; a "
    "match needs {match:.2f}, a human review {review:.2f}). The submission is refused."
)
FACE_MISMATCH_DRIVING = (
    "The driving video does not show the consenting performer (person #{person}): its faces "
    "do not match their consent reference photo (median similarity {score:.2f} over {faces} "
    "sampled frame(s) with a face, with {backend}; a match needs {match:.2f}, a human review "
    "{review:.2f}). The submission is refused."
)
FACE_MISMATCH_NO_FACE = (
    "No face was found in the {what} ({count} image(s) checked), so it cannot be matched "
    "with the consent reference photo of person #{person}. The submission is refused."
)
LEAKAGE_REVIEW_ONLY = (
    "Leakage report #{report} is {verdict}; only a report that asks for review can be "
    "released or rejected."
)
LEAKAGE_ALREADY_REVIEWED = "Leakage report #{report} was already decided ({decision})."
LEAKAGE_REASON_REQUIRED = "Give the reason for the decision."
LEAKAGE_REVIEW_NOT_ALLOWED = (
    "Only a compliance officer holding the permission to review leakage reports may release or "
    "reject an output."
)
LEAKAGE_REQUESTER_CANNOT_REVIEW = (
    "You requested {subject}; someone else must release or reject its output."
)
THRESHOLD_CHANGE_NOT_ALLOWED = "Only a compliance officer may change face thresholds."
THRESHOLD_REASON_REQUIRED = "Give the reason for the change."


class FaceMismatchError(ApplicationError):
    """A face check refused a submission (422). Its record and audit event are kept."""

    @classmethod
    def from_record(cls, record: FaceMatchRecord) -> FaceMismatchError:
        reason = record.reasons[0] if record.reasons else {}
        return cls(
            str(reason.get("message", "The faces do not match the consent reference photo.")),
            code="face_mismatch",
            extra={
                "check": record.check_type,
                "person_id": record.person_id,
                "face_match_id": record.pk,
                "verdict": record.verdict,
            },
            status_code=status.HTTP_422_UNPROCESSABLE_ENTITY,
        )


# --- input shapes (what the engine's to_dict() produce) -----------------------------------------


class SeriesStatsData(TypedDict):
    count: int
    mean: float
    min: float
    p10: float
    median: float
    p90: float
    max: float


class MatchScoresData(TypedDict):
    """``reenactment.engine.identity.MatchScores.to_dict()``."""

    count: int
    no_face: int
    multiple_faces: int
    similarities: list[float | None]
    stats: SeriesStatsData | None
    backend: str
    fingerprint: str


class LeakageSampleData(TypedDict):
    frame: int
    t: float | None
    portrait_sim: float | None
    performer_sim: float | None


class LeakageMeasurementData(TypedDict):
    """``reenactment.engine.identity.LeakageMeasurement.to_dict()``."""

    total_frames: int
    sampled_frames: int
    faceless_frames: int
    faceless_share: float
    baseline_similarity: float
    portrait: SeriesStatsData | None
    performer: SeriesStatsData | None
    series: list[LeakageSampleData]
    sampling: str
    backend: str
    fingerprint: str


def _invalid(message: str) -> ValueError:
    # A programming error on the calling side (the engine's output was altered or mixed up),
    # not a user's input problem: ValueError, so it surfaces as a 500 and in the logs.
    return ValueError(f"identity check input: {message}")


def _number(value: object, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise _invalid(f"{what} must be a finite number, got {value!r}")
    return float(value)


def _optional_number(value: object, what: str) -> float | None:
    return None if value is None else _number(value, what)


def _count(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise _invalid(f"{what} must be a count, got {value!r}")
    return value


def _backend_identity(backend_info: Mapping[str, Any], produced_by: Mapping[str, Any]) -> str:
    """The backend name, after checking the scores came from the described model files."""
    name = backend_info.get("name")
    fingerprint = backend_info.get("fingerprint")
    if not isinstance(name, str) or not name or len(name) > 32:
        raise _invalid(f"backend_info needs a backend name, got {name!r}")
    if not isinstance(fingerprint, str) or not _FINGERPRINT.match(fingerprint):
        raise _invalid("backend_info needs the 64-hex-digit fingerprint of the model files")
    if produced_by.get("backend") != name or produced_by.get("fingerprint") != fingerprint:
        raise _invalid(
            f"the scores come from {produced_by.get('backend')!r} "
            f"{str(produced_by.get('fingerprint'))[:12]}..., not from the described backend "
            f"{name!r} {fingerprint[:12]}...: scores of other weights mean something else"
        )
    return name


def _subject_check(subject_type: str, subject_id: int | str) -> str:
    if not _SUBJECT_TYPE.match(subject_type):
        raise _invalid(
            f"subject_type must be a model label like 'reenactment.renderjob': {subject_type!r}"
        )
    text = str(subject_id)
    if not text or len(text) > 64:
        raise _invalid("subject_id must be 1-64 characters")
    return text


# --- statistics (recomputed here, so the stored numbers are governance's own) --------------------


def _percentile(ordered: Sequence[float], q: float) -> float:
    """Linear-interpolation percentile of sorted values (numpy's default method)."""
    position = (len(ordered) - 1) * q / 100.0
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def _stats(values: Sequence[float | None]) -> dict[str, float | int] | None:
    present = sorted(v for v in values if v is not None)
    if not present:
        return None
    return {
        "count": len(present),
        "mean": sum(present) / len(present),
        "min": present[0],
        "p10": _percentile(present, 10),
        "median": _percentile(present, 50),
        "p90": _percentile(present, 90),
        "max": present[-1],
    }


def _stats_agree(ours: Mapping[str, float | int] | None, theirs: object, what: str) -> None:
    if ours is None or theirs is None:
        if ours is not theirs:
            raise _invalid(f"{what} statistics do not describe the given scores")
        return
    if not isinstance(theirs, Mapping):
        raise _invalid(f"{what} statistics must be a mapping")
    for key, value in ours.items():
        if abs(_number(theirs.get(key), f"{what}.{key}") - value) > _STATS_TOLERANCE:
            raise _invalid(f"{what}.{key} is {theirs.get(key)!r} but the scores give {value:.6f}")


def _rounded(stats: Mapping[str, float | int] | None) -> dict[str, float | int] | None:
    if stats is None:
        return None
    return {k: (v if isinstance(v, int) else round(v, 6)) for k, v in stats.items()}


# --- thresholds -------------------------------------------------------------------------------


def _declared_thresholds(backend_info: Mapping[str, Any]) -> tuple[float, float]:
    declared = backend_info.get("thresholds")
    if not isinstance(declared, Mapping):
        raise _invalid("backend_info needs the backend's declared thresholds")
    match = _number(declared.get("match"), "thresholds.match")
    review = _number(declared.get("review"), "thresholds.review")
    if not -1.0 <= review <= match <= 1.0:
        raise _invalid(f"declared thresholds are out of order: review {review}, match {match}")
    return match, review


@transaction.atomic
def face_threshold_policy_for_backend(*, backend_info: Mapping[str, Any]) -> FaceThresholdPolicy:
    """The policy of ``backend_info["name"]``; created (audited, by the system) from the
    backend's declared thresholds and governance's defaults when the backend is new."""
    name = backend_info.get("name")
    if not isinstance(name, str) or not name or len(name) > 32:
        raise _invalid(f"backend_info needs a backend name, got {name!r}")
    policy = FaceThresholdPolicy.objects.filter(backend=name).first()
    if policy is not None:
        return policy
    match, review = _declared_thresholds(backend_info)
    now = timezone.now()
    policy, created = FaceThresholdPolicy.objects.get_or_create(
        backend=name,
        defaults={
            "match_threshold": match,
            "review_threshold": review,
            "leakage_margin": DEFAULT_LEAKAGE_MARGIN,
            "leakage_review_margin": DEFAULT_LEAKAGE_REVIEW_MARGIN,
            "max_faceless_share": DEFAULT_MAX_FACELESS_SHARE,
            "min_sampled_frames": DEFAULT_MIN_SAMPLED_FRAMES,
            "licence_text": str(backend_info.get("licence", "")),
            "created_at": now,
            "updated_at": now,
        },
    )
    if created:
        audit_event_record(
            actor=None,
            action=AuditAction.FACE_THRESHOLD_POLICY_CREATE,
            target_type="governance.facethresholdpolicy",
            target_id=policy.pk,
            payload={**policy.snapshot(), "source": "declared by the backend"},
        )
    return policy


_POLICY_FIELDS: Final[tuple[str, ...]] = (
    "match_threshold",
    "review_threshold",
    "leakage_margin",
    "leakage_review_margin",
    "max_faceless_share",
    "min_sampled_frames",
)


def _policy_validate(values: Mapping[str, float | int]) -> None:
    errors: dict[str, str] = {}
    match, review = values["match_threshold"], values["review_threshold"]
    if not -1.0 <= review <= 1.0:
        errors["review_threshold"] = "Similarities lie between -1 and 1."
    if not -1.0 <= match <= 1.0:
        errors["match_threshold"] = "Similarities lie between -1 and 1."
    elif review > match:
        errors["review_threshold"] = "The review band lies below the match threshold."
    margin, review_margin = values["leakage_margin"], values["leakage_review_margin"]
    if not 0.0 <= margin <= 2.0:
        errors["leakage_margin"] = "A margin lies between 0 and 2."
    if not 0.0 <= review_margin <= 2.0:
        errors["leakage_review_margin"] = "A margin lies between 0 and 2."
    elif review_margin > margin:
        errors["leakage_review_margin"] = "The review margin cannot exceed the failing margin."
    if not 0.0 <= values["max_faceless_share"] <= 1.0:
        errors["max_faceless_share"] = "A share lies between 0 and 1."
    if not 1 <= values["min_sampled_frames"] <= 10_000:
        errors["min_sampled_frames"] = "Between 1 and 10000 frames."
    if errors:
        raise ValidationError(errors)


def _policy_for_change(*, backend: str, reason: str, acting_user: User) -> FaceThresholdPolicy:
    """The backend's policy, locked for a compliance officer's audited change with a reason."""
    if not user_has_perm(acting_user, "governance.change_facethresholdpolicy"):
        raise ApplicationError(
            THRESHOLD_CHANGE_NOT_ALLOWED,
            code="permission_denied",
            status_code=status.HTTP_403_FORBIDDEN,
        )
    if not reason.strip():
        raise ValidationError({"reason": THRESHOLD_REASON_REQUIRED})
    policy = FaceThresholdPolicy.objects.select_for_update().filter(backend=backend).first()
    if policy is None:
        raise ApplicationError(
            f"There are no face thresholds for the backend {backend!r}.",
            code="not_found",
            status_code=status.HTTP_404_NOT_FOUND,
        )
    return policy


@transaction.atomic
def face_threshold_policy_update(
    *,
    backend: str,
    reason: str,
    acting_user: User,
    match_threshold: float | None = None,
    review_threshold: float | None = None,
    leakage_margin: float | None = None,
    leakage_review_margin: float | None = None,
    max_faceless_share: float | None = None,
    min_sampled_frames: int | None = None,
) -> FaceThresholdPolicy:
    """Change a backend's thresholds (None: unchanged). Compliance officers only; the reason
    is mandatory; the audit event carries the old and new values of what changed. Records
    made before keep the thresholds they were decided with."""
    policy = _policy_for_change(backend=backend, reason=reason, acting_user=acting_user)
    given = {
        "match_threshold": match_threshold,
        "review_threshold": review_threshold,
        "leakage_margin": leakage_margin,
        "leakage_review_margin": leakage_review_margin,
        "max_faceless_share": max_faceless_share,
        "min_sampled_frames": min_sampled_frames,
    }
    old = {field: getattr(policy, field) for field in _POLICY_FIELDS}
    new = {field: old[field] if given[field] is None else given[field] for field in _POLICY_FIELDS}
    _policy_validate(new)  # type: ignore[arg-type]  # None replaced just above
    changed = [field for field in _POLICY_FIELDS if new[field] != old[field]]
    if not changed:
        return policy
    for field in changed:
        setattr(policy, field, new[field])
    policy.updated_at = timezone.now()
    policy.updated_by = acting_user
    policy.save(update_fields=[*changed, "updated_at", "updated_by"])
    audit_event_record(
        actor=acting_user,
        action=AuditAction.FACE_THRESHOLD_POLICY_UPDATE,
        target_type="governance.facethresholdpolicy",
        target_id=policy.pk,
        payload={
            "backend": policy.backend,
            "old": {field: old[field] for field in changed},
            "new": {field: new[field] for field in changed},
            "reason": reason.strip(),
        },
    )
    return policy


@transaction.atomic
def face_threshold_policy_licence_set(
    *, backend: str, license_id: int, reason: str, acting_user: User
) -> FaceThresholdPolicy:
    """Record which licence covers the backend's pretrained weights (e.g. a commercial
    insightface licence once bought). Compliance officers; the reason is mandatory; audited
    with the old and new licence. The licence (registered by a data steward) must not be
    withdrawn. From then on ``face_backend_assert_usable`` judges jobs by it; jobs already
    submitted are judged again at their leakage check."""
    policy = _policy_for_change(backend=backend, reason=reason, acting_user=acting_user)
    licence = License.objects.filter(pk=license_id).first()
    if licence is None:
        raise ValidationError({"license_id": f"There is no licence #{license_id}."})
    if licence.status == LicenseStatus.WITHDRAWN:
        raise ValidationError(
            {"license_id": f"The licence {licence.name} was withdrawn; link one in force."}
        )
    old = policy.licence
    if old is not None and old.pk == licence.pk:
        return policy
    policy.licence = licence
    policy.updated_at = timezone.now()
    policy.updated_by = acting_user
    policy.save(update_fields=["licence", "updated_at", "updated_by"])
    audit_event_record(
        actor=acting_user,
        action=AuditAction.FACE_THRESHOLD_POLICY_LICENCE_SET,
        target_type="governance.facethresholdpolicy",
        target_id=policy.pk,
        payload={
            "backend": policy.backend,
            "old": {"license_id": old.pk, "name": old.name} if old is not None else None,
            "new": {"license_id": licence.pk, "name": licence.name},
            "reason": reason.strip(),
        },
    )
    return policy


# --- face match at submission -----------------------------------------------------------------


def _reason(code: str, verdict: str, message: str) -> dict[str, str]:
    return {"code": code, "verdict": verdict, "message": message}


def _match_verdict(
    *,
    check: str,
    person: Person,
    similarities: Sequence[float | None],
    multiple_faces: int,
    policy: FaceThresholdPolicy,
) -> tuple[str, list[dict[str, str]], dict[str, float | int] | None]:
    stats = _stats(similarities)
    count = len(similarities)
    portrait = check == FaceMatchCheck.PORTRAIT_VS_SUBJECT
    limits = {"match": policy.match_threshold, "review": policy.review_threshold}
    if stats is None:
        what = "portrait" if portrait else "sampled frames of the driving video"
        message = FACE_MISMATCH_NO_FACE.format(what=what, count=count, person=person.pk)
        return FaceMatchVerdict.NO_MATCH, [_reason("no_face", "no_match", message)], None
    typical = float(stats["median"])
    if typical < policy.review_threshold:
        template = FACE_MISMATCH_PORTRAIT if portrait else FACE_MISMATCH_DRIVING
        message = template.format(
            person=person.pk,
            score=typical,
            faces=stats["count"],
            backend=policy.backend,
            **limits,
        )
        return FaceMatchVerdict.NO_MATCH, [_reason("face_mismatch", "no_match", message)], stats
    reasons: list[dict[str, str]] = []
    if typical < policy.match_threshold:
        reasons.append(
            _reason(
                "similarity_in_review_band",
                "review",
                f"Median similarity {typical:.2f} lies in the review band "
                f"[{policy.review_threshold:.2f}, {policy.match_threshold:.2f}).",
            )
        )
    low = sum(1 for v in similarities if v is not None and v < policy.review_threshold)
    if low:
        reasons.append(
            _reason(
                "some_frames_do_not_match",
                "review",
                f"{low} of {stats['count']} faces score below {policy.review_threshold:.2f} "
                f"(lowest {float(stats['min']):.2f}): part of the video may show someone else.",
            )
        )
    faceless = count - int(stats["count"])
    if faceless / count > policy.max_faceless_share:
        reasons.append(
            _reason(
                "faces_missing",
                "review",
                f"No face in {faceless} of {count} sampled images "
                f"(more than {policy.max_faceless_share:.0%}).",
            )
        )
    if multiple_faces:
        reasons.append(
            _reason(
                "multiple_faces",
                "review",
                f"{multiple_faces} of {count} images show another face about as large as the "
                "one compared.",
            )
        )
    verdict = FaceMatchVerdict.REVIEW if reasons else FaceMatchVerdict.MATCH
    return verdict, reasons, stats


@transaction.atomic
def _face_match_record(
    *,
    subject_type: str,
    subject_id: str,
    person: Person,
    check: str,
    scores: Mapping[str, Any],
    backend_info: Mapping[str, Any],
    candidate_sha256: str,
    acting_user: User | None,
) -> FaceMatchRecord:
    if check not in FaceMatchCheck.values:
        raise _invalid(f"check must be one of {', '.join(FaceMatchCheck.values)}: {check!r}")
    backend = _backend_identity(backend_info, scores)
    raw = scores.get("similarities")
    if not isinstance(raw, list | tuple) or not raw:
        raise _invalid("scores need a non-empty list of similarities")
    similarities = [_optional_number(v, "similarity") for v in raw]
    if _count(scores.get("count"), "count") != len(similarities):
        raise _invalid("scores.count differs from the number of similarities")
    if _count(scores.get("no_face"), "no_face") != sum(v is None for v in similarities):
        raise _invalid("scores.no_face differs from the similarities without a face")
    multiple_faces = _count(scores.get("multiple_faces", 0), "multiple_faces")
    ours = _stats(similarities)
    _stats_agree(ours, scores.get("stats"), "scores.stats")
    policy = face_threshold_policy_for_backend(backend_info=backend_info)
    verdict, reasons, _ = _match_verdict(
        check=check,
        person=person,
        similarities=similarities,
        multiple_faces=multiple_faces,
        policy=policy,
    )
    stored_scores = {
        "count": len(similarities),
        "no_face": sum(v is None for v in similarities),
        "multiple_faces": multiple_faces,
        "similarities": [None if v is None else round(v, 6) for v in similarities],
        "stats": _rounded(ours),
    }
    record = FaceMatchRecord.objects.create(
        subject_type=subject_type,
        subject_id=subject_id,
        check_type=check,
        person=person,
        reference_sha256=person.reference_photo.sha256,
        candidate_sha256=candidate_sha256,
        verdict=verdict,
        reasons=reasons,
        scores=stored_scores,
        thresholds=policy.snapshot(),
        backend=backend,
        backend_fingerprint=str(backend_info["fingerprint"]),
        backend_licence=str(backend_info.get("licence", "")),
        backend_info=dict(backend_info),
        created_at=timezone.now(),
        created_by=acting_user,
    )
    audit_event_record(
        actor=acting_user,
        action=(
            AuditAction.FACE_MATCH_REJECT
            if verdict == FaceMatchVerdict.NO_MATCH
            else AuditAction.FACE_MATCH_RECORD
        ),
        target_type="governance.facematchrecord",
        target_id=record.pk,
        payload={
            "subject_type": subject_type,
            "subject_id": subject_id,
            "check": check,
            "person_id": person.pk,
            "verdict": verdict,
            "reasons": [reason["code"] for reason in reasons],
            "median": None if ours is None else round(float(ours["median"]), 6),
            "min": None if ours is None else round(float(ours["min"]), 6),
            "faces": 0 if ours is None else ours["count"],
            "count": len(similarities),
            "thresholds": policy.snapshot(),
            "reference_sha256": record.reference_sha256,
            "backend": backend,
            "fingerprint": record.backend_fingerprint,
        },
    )
    return record


def face_match_evaluate(
    *,
    subject_type: str,
    subject_id: int | str,
    person: Person,
    check: str,
    scores: Mapping[str, Any],
    backend_info: Mapping[str, Any],
    acting_user: User | None,
    candidate_sha256: str = "",
    raise_on_mismatch: bool = True,
) -> FaceMatchRecord:
    """Decide whether a submission's face matches a consenting person's reference photo,
    record the scores and the verdict (no embeddings), and audit it.

    ``scores`` is ``identity_match(...).to_dict()``, ``backend_info`` the backend's
    ``info.to_dict()``; ``check`` is ``portrait_vs_subject`` (the portrait against the
    portrait subject) or ``driving_vs_performer`` (sampled driving frames against the
    performer). Returns the record for ``match`` and ``review``.

    On ``no_match`` it raises :class:`FaceMismatchError` (``face_mismatch``, 422) with a
    message saying which input failed. With ``raise_on_mismatch`` (the default) the record
    and its ``face_match.reject`` audit event are committed first, in their own transaction,
    so call it outside any transaction (Django refuses a durable block inside another). With
    ``raise_on_mismatch=False`` it joins the caller's transaction and returns the
    ``no_match`` record too: the caller commits its own rejection with it and raises
    ``FaceMismatchError.from_record(record)`` afterwards.
    """
    subject = _subject_check(subject_type, subject_id)
    arguments: dict[str, Any] = {
        "subject_type": subject_type,
        "subject_id": subject,
        "person": person,
        "check": check,
        "scores": scores,
        "backend_info": backend_info,
        "candidate_sha256": candidate_sha256,
        "acting_user": acting_user,
    }
    if not raise_on_mismatch:
        return _face_match_record(**arguments)
    with transaction.atomic(durable=True):
        record = _face_match_record(**arguments)
    if record.verdict == FaceMatchVerdict.NO_MATCH:
        raise FaceMismatchError.from_record(record)
    return record


# --- the leakage gate -------------------------------------------------------------------------

_SEVERITY: Final[dict[str, int]] = {
    LeakageVerdict.PASS: 0,
    LeakageVerdict.REVIEW: 1,
    LeakageVerdict.FAIL: 2,
}


def leakage_verdict(
    *,
    portrait: Mapping[str, float | int] | None,
    performer: Mapping[str, float | int] | None,
    baseline: float,
    total_frames: int,
    sampled_frames: int,
    faceless_frames: int,
    policy: FaceThresholdPolicy,
) -> tuple[str, list[dict[str, str]]]:
    """The gate's rules (module docstring); returns the verdict and the non-passing rules."""
    reasons: list[dict[str, str]] = []
    share = faceless_frames / sampled_frames if sampled_frames else 1.0
    if share > policy.max_faceless_share:
        reasons.append(
            _reason(
                "faces_missing",
                LeakageVerdict.FAIL,
                f"No face was detected in {faceless_frames} of {sampled_frames} sampled frames "
                f"({share:.0%}; at most {policy.max_faceless_share:.0%} allowed).",
            )
        )
    if portrait is not None and performer is not None:
        mean = float(portrait["mean"])
        p10 = float(portrait["p10"])
        if mean < policy.review_threshold:
            reasons.append(
                _reason(
                    "identity_lost",
                    LeakageVerdict.FAIL,
                    f"The output does not show the portrait's person: mean similarity to the "
                    f"portrait {mean:.2f} is below {policy.review_threshold:.2f}.",
                )
            )
        elif mean < policy.match_threshold:
            reasons.append(
                _reason(
                    "identity_weak",
                    LeakageVerdict.REVIEW,
                    f"Mean similarity to the portrait {mean:.2f} is below the match threshold "
                    f"{policy.match_threshold:.2f}.",
                )
            )
        elif p10 < policy.match_threshold:
            reasons.append(
                _reason(
                    "identity_dips",
                    LeakageVerdict.REVIEW,
                    f"A tenth of the frames drift from the portrait: 10th-percentile similarity "
                    f"{p10:.2f} is below the match threshold {policy.match_threshold:.2f}.",
                )
            )
        # Rounded like the stored scores, so a rise exactly at the margin is not decided by
        # the last bit of a float subtraction.
        rise = round(float(performer["mean"]) - baseline, 6)
        rise_p90 = round(float(performer["p90"]) - baseline, 6)
        if rise > policy.leakage_margin:
            reasons.append(
                _reason(
                    "identity_leak",
                    LeakageVerdict.FAIL,
                    f"The output resembles the driving performer: mean similarity "
                    f"{float(performer['mean']):.2f} is {rise:+.2f} above the portrait-performer "
                    f"baseline {baseline:.2f} (at most {policy.leakage_margin:+.2f} allowed).",
                )
            )
        elif float(performer["mean"]) >= policy.match_threshold > baseline:
            reasons.append(
                _reason(
                    "matches_performer",
                    LeakageVerdict.FAIL,
                    f"The output matches the driving performer (mean similarity "
                    f"{float(performer['mean']):.2f} at or above {policy.match_threshold:.2f}).",
                )
            )
        elif rise > policy.leakage_review_margin or rise_p90 > policy.leakage_margin:
            reasons.append(
                _reason(
                    "identity_leak_suspected",
                    LeakageVerdict.REVIEW,
                    f"Similarity to the driving performer rises above the baseline {baseline:.2f}: "
                    f"mean {rise:+.2f} (review above {policy.leakage_review_margin:+.2f}), "
                    f"90th percentile {rise_p90:+.2f} (review above {policy.leakage_margin:+.2f}).",
                )
            )
    wanted = min(policy.min_sampled_frames, total_frames)
    if sampled_frames < wanted:
        reasons.append(
            _reason(
                "too_few_samples",
                LeakageVerdict.REVIEW,
                f"Only {sampled_frames} of {total_frames} frames were checked; a stable verdict "
                f"needs {policy.min_sampled_frames}.",
            )
        )
    verdict = max(
        (reason["verdict"] for reason in reasons),
        key=_SEVERITY.__getitem__,
        default=LeakageVerdict.PASS,
    )
    return verdict, reasons


def _series(measurement: Mapping[str, Any]) -> list[dict[str, Any]]:
    raw = measurement.get("series")
    if not isinstance(raw, list | tuple) or not raw:
        raise _invalid("the measurement needs a non-empty series of sampled frames")
    series: list[dict[str, Any]] = []
    previous = -1
    for index, item in enumerate(raw):
        if not isinstance(item, Mapping):
            raise _invalid(f"series[{index}] must be a mapping")
        frame = _count(item.get("frame"), f"series[{index}].frame")
        if frame <= previous:
            raise _invalid("series frames must be increasing")
        previous = frame
        portrait = _optional_number(item.get("portrait_sim"), f"series[{index}].portrait_sim")
        performer = _optional_number(item.get("performer_sim"), f"series[{index}].performer_sim")
        if (portrait is None) != (performer is None):
            raise _invalid(f"series[{index}]: a frame has both similarities or neither")
        series.append(
            {
                "frame": frame,
                "t": _optional_number(item.get("t"), f"series[{index}].t"),
                "portrait_sim": portrait,
                "performer_sim": performer,
            }
        )
    return series


@transaction.atomic
def leakage_report_create(
    *,
    subject_type: str,
    subject_id: int | str,
    measurement: Mapping[str, Any],
    backend_info: Mapping[str, Any],
    acting_user: User | None,
) -> LeakageReport:
    """Apply the backend's thresholds to a leakage measurement and record the verdict
    (pass / review / fail) with its reasons, statistics and time series. Audited.

    ``measurement`` is ``leakage_measure(...).to_dict()``; ``backend_info`` the backend's
    ``info.to_dict()``. Composable: the verification step may call it inside its own
    transaction and quarantine on ``fail`` or ``review`` atomically with the report. A
    ``review`` report then waits for ``leakage_report_release`` / ``leakage_report_reject``.
    """
    subject = _subject_check(subject_type, subject_id)
    backend = _backend_identity(backend_info, measurement)
    series = _series(measurement)
    total = _count(measurement.get("total_frames"), "total_frames")
    if total < len(series) or total <= series[-1]["frame"]:
        raise _invalid("total_frames is smaller than the sampled frames")
    faceless = sum(1 for item in series if item["portrait_sim"] is None)
    if _count(measurement.get("sampled_frames"), "sampled_frames") != len(series):
        raise _invalid("sampled_frames differs from the length of the series")
    if _count(measurement.get("faceless_frames"), "faceless_frames") != faceless:
        raise _invalid("faceless_frames differs from the frames without a face in the series")
    baseline = _number(measurement.get("baseline_similarity"), "baseline_similarity")
    portrait = _stats([item["portrait_sim"] for item in series])
    performer = _stats([item["performer_sim"] for item in series])
    _stats_agree(portrait, measurement.get("portrait"), "portrait")
    _stats_agree(performer, measurement.get("performer"), "performer")

    policy = face_threshold_policy_for_backend(backend_info=backend_info)
    verdict, reasons = leakage_verdict(
        portrait=portrait,
        performer=performer,
        baseline=baseline,
        total_frames=total,
        sampled_frames=len(series),
        faceless_frames=faceless,
        policy=policy,
    )
    report = LeakageReport.objects.create(
        subject_type=subject_type,
        subject_id=subject,
        verdict=verdict,
        reasons=reasons,
        portrait_stats=_rounded(portrait),
        performer_stats=_rounded(performer),
        baseline_similarity=round(baseline, 6),
        time_series=series,
        total_frames=total,
        sampled_frames=len(series),
        faceless_frames=faceless,
        faceless_share=faceless / len(series),
        sampling=str(measurement.get("sampling", ""))[:200],
        thresholds=policy.snapshot(),
        backend=backend,
        backend_fingerprint=str(backend_info["fingerprint"]),
        backend_licence=str(backend_info.get("licence", "")),
        backend_info=dict(backend_info),
        created_at=timezone.now(),
        created_by=acting_user,
    )
    audit_event_record(
        actor=acting_user,
        action=AuditAction.LEAKAGE_REPORT_CREATE,
        target_type="governance.leakagereport",
        target_id=report.pk,
        payload={
            "subject_type": subject_type,
            "subject_id": subject,
            "verdict": verdict,
            "reasons": [reason["code"] for reason in reasons],
            "portrait_mean": None if portrait is None else round(float(portrait["mean"]), 6),
            "portrait_p10": None if portrait is None else round(float(portrait["p10"]), 6),
            "performer_mean": None if performer is None else round(float(performer["mean"]), 6),
            "baseline": round(baseline, 6),
            "faceless_share": round(report.faceless_share, 6),
            "sampled_frames": len(series),
            "total_frames": total,
            "thresholds": policy.snapshot(),
            "backend": backend,
            "fingerprint": report.backend_fingerprint,
        },
    )
    return report


def _review(
    *, report: LeakageReport, decision: str, reason: str, acting_user: User
) -> LeakageReport:
    if not user_has_perm(acting_user, "governance.review_leakagereport", report):
        raise ApplicationError(
            LEAKAGE_REVIEW_NOT_ALLOWED,
            code="leakage_review_not_allowed",
            status_code=status.HTTP_403_FORBIDDEN,
        )
    if not reason.strip():
        raise ValidationError({"reason": LEAKAGE_REASON_REQUIRED})
    locked = LeakageReport.objects.select_for_update().get(pk=report.pk)
    if locked.verdict != LeakageVerdict.REVIEW:
        raise ApplicationError(
            LEAKAGE_REVIEW_ONLY.format(report=locked.pk, verdict=locked.verdict),
            code="leakage_not_reviewable",
            status_code=status.HTTP_409_CONFLICT,
        )
    if locked.review_decision:
        raise ApplicationError(
            LEAKAGE_ALREADY_REVIEWED.format(report=locked.pk, decision=locked.review_decision),
            code="leakage_already_reviewed",
            status_code=status.HTTP_409_CONFLICT,
        )
    # Separation of duties: whoever asked for the output never clears it.
    if ApprovalRequest.objects.filter(
        subject_type=locked.subject_type, subject_id=locked.subject_id, requested_by=acting_user
    ).exists():
        raise ApplicationError(
            LEAKAGE_REQUESTER_CANNOT_REVIEW.format(
                subject=f"{locked.subject_type}:{locked.subject_id}"
            ),
            code="leakage_requester_cannot_review",
            status_code=status.HTTP_403_FORBIDDEN,
        )
    locked.review_decision = decision
    locked.review_reason = reason.strip()
    locked.reviewed_by = acting_user
    locked.reviewed_at = timezone.now()
    locked.save(update_fields=["review_decision", "review_reason", "reviewed_by", "reviewed_at"])
    audit_event_record(
        actor=acting_user,
        action=(
            AuditAction.LEAKAGE_REPORT_RELEASE
            if decision == LeakageReviewDecision.RELEASE
            else AuditAction.LEAKAGE_REPORT_REJECT
        ),
        target_type="governance.leakagereport",
        target_id=locked.pk,
        payload={
            "subject_type": locked.subject_type,
            "subject_id": locked.subject_id,
            "reason": locked.review_reason,
            "reasons": [item["code"] for item in locked.reasons],
        },
    )
    leakage_review_handlers.dispatch(
        LeakageReviewed(
            report_id=locked.pk,
            subject_type=locked.subject_type,
            subject_id=locked.subject_id,
            decision=decision,
            reason=locked.review_reason,
            acting_user_id=acting_user.pk,
            reviewed_at=locked.reviewed_at,
        )
    )
    return locked


@transaction.atomic(durable=True)
def leakage_report_release(
    *, report: LeakageReport, reason: str, acting_user: User
) -> LeakageReport:
    """Release an output whose report asked for review: a compliance officer, who did not
    request the output, says why. Audited; the leakage-review handlers run in the same
    transaction (the jobs side publishes)."""
    return _review(
        report=report,
        decision=LeakageReviewDecision.RELEASE,
        reason=reason,
        acting_user=acting_user,
    )


@transaction.atomic(durable=True)
def leakage_report_reject(
    *, report: LeakageReport, reason: str, acting_user: User
) -> LeakageReport:
    """Reject an output whose report asked for review (same rules as release; the jobs side
    rejects the job)."""
    return _review(
        report=report, decision=LeakageReviewDecision.REJECT, reason=reason, acting_user=acting_user
    )
