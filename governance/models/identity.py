"""Identity checks: the thresholds compliance sets per face backend, the face matches that bind
a submission to its consents, and the identity-leakage reports of generated outputs.

Scores are computed by the engine (``reenactment.engine.identity``) and handed over as plain
numbers; governance applies the thresholds, decides and records. No embedding is ever stored:
records hold similarity scores, the backend's fingerprint (the SHA-256 over its model files)
and its licence, so every verdict can be traced to the exact weights that produced it.

Similarities are in the backends' shared scheme, *higher = more similar*, in [-1, 1]
(dlib: ``1 - euclidean distance``; insightface: cosine).
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q

from governance.models.persons import Person
from governance.models.registry import License


class FaceThresholdPolicy(models.Model):
    """The decision thresholds for one face backend (``backend`` is its name: ``dlib``,
    ``insightface``), set by compliance officers (``face_threshold_policy_update``, audited
    with old and new values). Verdicts copy the values they used, so a later change never
    rewrites an earlier decision.

    * ``match_threshold``: similarity at or above which two faces are the same person.
    * ``review_threshold``: the lower edge of the review band; below it, not the same person.
    * ``leakage_margin``: how far the output's mean similarity to the driving performer may
      rise above the portrait-performer baseline before the output fails.
    * ``leakage_review_margin``: a mean rise above this (or a 90th-percentile rise above
      ``leakage_margin``) sends the output to a human.
    * ``max_faceless_share``: the largest share of sampled frames allowed to show no face
      (outputs fail above it; driving videos go to review).
    * ``min_sampled_frames``: fewer sampled frames (when the output had more) means review.

    ``licence`` is the registered licence of the backend's pretrained weights (insightface's
    packs are non-commercial research only); ``licence_text`` the backend's own statement.
    """

    backend = models.CharField(max_length=32, unique=True)
    match_threshold = models.FloatField()
    review_threshold = models.FloatField()
    leakage_margin = models.FloatField()
    leakage_review_margin = models.FloatField()
    max_faceless_share = models.FloatField()
    min_sampled_frames = models.PositiveSmallIntegerField()
    licence = models.ForeignKey(
        License, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    licence_text = models.TextField(blank=True)
    created_at = models.DateTimeField()
    updated_at = models.DateTimeField()
    updated_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )

    class Meta:
        ordering = ["backend"]
        verbose_name_plural = "face threshold policies"
        constraints = [
            models.CheckConstraint(
                condition=Q(review_threshold__lte=models.F("match_threshold"))
                & Q(match_threshold__lte=1.0)
                & Q(review_threshold__gte=-1.0),
                name="face_threshold_review_below_match",
            ),
            models.CheckConstraint(
                condition=Q(leakage_review_margin__gte=0.0)
                & Q(leakage_review_margin__lte=models.F("leakage_margin")),
                name="face_threshold_leakage_margins_ordered",
            ),
            models.CheckConstraint(
                condition=Q(max_faceless_share__gte=0.0) & Q(max_faceless_share__lte=1.0),
                name="face_threshold_faceless_share_is_a_share",
            ),
            models.CheckConstraint(
                condition=Q(min_sampled_frames__gte=1), name="face_threshold_min_one_frame"
            ),
        ]

    def __str__(self) -> str:
        return f"Face thresholds for {self.backend}"

    def snapshot(self) -> dict[str, object]:
        """The values a verdict used, as stored on the record and in audit payloads."""
        return {
            "backend": self.backend,
            "match_threshold": self.match_threshold,
            "review_threshold": self.review_threshold,
            "leakage_margin": self.leakage_margin,
            "leakage_review_margin": self.leakage_review_margin,
            "max_faceless_share": self.max_faceless_share,
            "min_sampled_frames": self.min_sampled_frames,
        }


class FaceMatchCheck(models.TextChoices):
    PORTRAIT_VS_SUBJECT = "portrait_vs_subject", "Portrait vs the portrait subject's reference"
    DRIVING_VS_PERFORMER = (
        "driving_vs_performer",
        "Driving video vs the performer's reference",
    )


class FaceMatchVerdict(models.TextChoices):
    MATCH = "match", "Match"
    REVIEW = "review", "Needs a human look"
    NO_MATCH = "no_match", "No match"


class FaceMatchRecord(models.Model):
    """One consent-binding face check of a submission (``subject_type``/``subject_id``, e.g.
    ``reenactment.renderjob`` and its id): the portrait against the portrait subject's
    enrolled reference photo, or sampled driving frames against the performer's.

    ``scores`` is what the engine measured (one similarity per image, None where no face
    was found, counts and statistics), ``reasons`` why the verdict is not a plain match,
    ``thresholds`` the policy values applied. ``reference_sha256`` names the reference photo
    compared against and ``candidate_sha256`` (when given) the uploaded file. Never edited.
    """

    subject_type = models.CharField(max_length=100)
    subject_id = models.CharField(max_length=64)
    check_type = models.CharField(max_length=32, choices=FaceMatchCheck.choices)
    person = models.ForeignKey(Person, on_delete=models.PROTECT, related_name="face_matches")
    reference_sha256 = models.CharField(max_length=64)
    candidate_sha256 = models.CharField(max_length=64, blank=True)
    verdict = models.CharField(max_length=16, choices=FaceMatchVerdict.choices)
    reasons = models.JSONField(default=list)
    scores = models.JSONField()
    thresholds = models.JSONField()
    backend = models.CharField(max_length=32)
    backend_fingerprint = models.CharField(max_length=64)
    backend_licence = models.TextField(blank=True)
    backend_info = models.JSONField()
    created_at = models.DateTimeField()
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["subject_type", "subject_id"])]

    def __str__(self) -> str:
        return f"{self.check_type} {self.verdict} for {self.subject_type}:{self.subject_id}"


class LeakageVerdict(models.TextChoices):
    PASS = "pass", "Pass"
    REVIEW = "review", "Needs review"
    FAIL = "fail", "Fail"


class LeakageReviewDecision(models.TextChoices):
    RELEASE = "release", "Release"
    REJECT = "reject", "Reject"


class LeakageReport(models.Model):
    """The identity-leakage gate's verdict on one generated output.

    Sampled output frames are compared with the portrait (identity preserved: similarity
    stays at or above the match threshold) and with the driving performer (identity leaked:
    similarity rises above ``baseline_similarity``, the portrait-performer similarity, by
    more than the margin); frames without a face count against the output.

    ``portrait_stats``/``performer_stats`` are ``{count, mean, min, p10, median, p90, max}``
    over the sampled frames with a face (null when no frame had one); ``time_series`` is one
    ``{frame, t, portrait_sim, performer_sim}`` per sampled frame (similarities null without a
    face); ``reasons`` the ``{code, verdict, message}`` of every rule that did not pass;
    ``thresholds`` the policy values applied.

    A *fail* is final (the output stays quarantined). A *review* waits for a compliance
    officer: ``review_decision`` release or reject, with ``review_reason`` (mandatory),
    ``reviewed_by`` and ``reviewed_at``, set once. Never edited otherwise.
    """

    subject_type = models.CharField(max_length=100)
    subject_id = models.CharField(max_length=64)
    verdict = models.CharField(max_length=8, choices=LeakageVerdict.choices)
    reasons = models.JSONField(default=list)
    portrait_stats = models.JSONField(null=True, blank=True)
    performer_stats = models.JSONField(null=True, blank=True)
    baseline_similarity = models.FloatField()
    time_series = models.JSONField(default=list)
    total_frames = models.PositiveIntegerField()
    sampled_frames = models.PositiveIntegerField()
    faceless_frames = models.PositiveIntegerField()
    faceless_share = models.FloatField()
    sampling = models.CharField(max_length=200, blank=True)
    thresholds = models.JSONField()
    backend = models.CharField(max_length=32)
    backend_fingerprint = models.CharField(max_length=64)
    backend_licence = models.TextField(blank=True)
    backend_info = models.JSONField()
    created_at = models.DateTimeField()
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    review_decision = models.CharField(
        max_length=8, choices=LeakageReviewDecision.choices, blank=True
    )
    review_reason = models.TextField(blank=True)
    reviewed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    reviewed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["subject_type", "subject_id"]),
            models.Index(fields=["verdict", "review_decision"]),
        ]
        permissions = [
            ("review_leakagereport", "Can release or reject an output flagged for review")
        ]
        constraints = [
            models.CheckConstraint(
                condition=(
                    Q(review_decision="", reviewed_at__isnull=True, reviewed_by__isnull=True)
                    | (
                        Q(verdict="review", reviewed_at__isnull=False, reviewed_by__isnull=False)
                        & Q(review_decision__in=["release", "reject"])
                        & ~Q(review_reason="")
                    )
                ),
                name="leakage_review_only_on_review_with_reason",
            ),
            models.CheckConstraint(
                condition=Q(faceless_share__gte=0.0) & Q(faceless_share__lte=1.0),
                name="leakage_faceless_share_is_a_share",
            ),
        ]

    def __str__(self) -> str:
        return (
            f"Leakage report #{self.pk} ({self.verdict}) for {self.subject_type}:{self.subject_id}"
        )
