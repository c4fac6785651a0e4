"""The verification chain between generation and publication.

Steps run in ``VERIFICATION_CHAIN`` order, each recorded as a ``VerificationStep``:

1. ``leakage``: the identity-leakage gate on sampled output frames (computed by
   ``reenactment.engine.identity``, judged by ``governance.services.identity``). Pass -> next
   step; review or fail -> the job is QUARANTINED (a compliance officer may release a review).
2. ``provenance``: C2PA signing of the stored output, then verification of the signed file
   (``governance.services.provenance``). It is last because any remux strips the manifest.

Publication requires every step to have passed.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.files.base import File
from django.core.files.storage import default_storage
from django.db import transaction
from django.utils import timezone

from governance.audit_codes import AuditAction
from governance.hooks import LeakageReviewed
from governance.models import User
from governance.services.audit import audit_event_record
from reenactment.models import (
    VERIFICATION_CHAIN,
    RenderJob,
    RenderJobStatus,
    VerificationStep,
    VerificationStepName,
    VerificationStepStatus,
)
from reenactment.scratch import scratch_folder
from reenactment.services.jobs import SUBJECT_TYPE, render_job_transition, stored_file_copy

logger = logging.getLogger(__name__)
S = RenderJobStatus
V = VerificationStepStatus


def render_job_verification_start(*, job: RenderJob) -> None:
    """GENERATED -> VERIFYING with one pending step per check; the chain runs after commit."""
    from reenactment.tasks import render_job_verify_task

    for name in VERIFICATION_CHAIN:
        VerificationStep.objects.update_or_create(
            job=job, name=name, defaults={"status": V.PENDING, "detail": {}}
        )
    render_job_transition(job=job, to=S.VERIFYING, acting_user=None)
    job_id = job.pk
    transaction.on_commit(lambda: render_job_verify_task.delay(job_id))


def _step_finish(
    *, job: RenderJob, name: str, status: str, detail: dict[str, Any], started: Any
) -> None:
    VerificationStep.objects.filter(job=job, name=name).update(
        status=status, detail=detail, started_at=started, finished_at=timezone.now()
    )
    audit_event_record(
        actor=None,
        action=AuditAction.RENDER_JOB_VERIFICATION_STEP,
        target_type=SUBJECT_TYPE,
        target_id=job.pk,
        payload={"step": name, "status": status},
    )


def _performer_frames(job: RenderJob, workdir: Path, count: int) -> list[Any]:
    from reenactment.engine.identity import sample_video_frames

    driving = stored_file_copy(job.driving, workdir, "driving")
    total = int(job.driving_info.get("frames") or 0) or None
    return sample_video_frames(driving, count=count, total=total)


def _run_leakage(job: RenderJob, workdir: Path) -> tuple[str, dict[str, Any]]:
    from governance.selectors.identity import face_backend_assert_usable
    from governance.services.identity import leakage_report_create
    from reenactment.engine import video_io
    from reenactment.engine.identity import leakage_measure
    from reenactment.services.identity import face_backend_load

    # Judged again now, before the recogniser is even loaded: its licence may have been
    # withdrawn or the platform moved to another backend since submission; a refusal fails the
    # step (nothing is published).
    face_backend_assert_usable(
        backend=settings.FACE_BACKEND, purpose=job.purpose, territory=job.territory
    )
    backend = face_backend_load()
    output = stored_file_copy(job.output, workdir, "output")
    portrait_path = stored_file_copy(job.portrait, workdir, "portrait")
    portrait, _ = video_io.load_image(portrait_path, max_side=settings.RENDER_MAX_PORTRAIT_SIDE)
    info = video_io.probe_video(output)
    measurement = leakage_measure(
        video_io.iter_frames(output),
        portrait=portrait,
        performer=_performer_frames(job, workdir, settings.LEAKAGE_PERFORMER_SAMPLES),
        backend=backend,
        total_frames=info.frame_count,
        fps=float(info.fps),
        max_samples=settings.LEAKAGE_MAX_SAMPLES,
        # Faceless frames are the gate's costly case (a full-frame CNN scan): bound the size.
        max_side=settings.LEAKAGE_MAX_SIDE,
    )
    with transaction.atomic():
        report = leakage_report_create(
            subject_type=SUBJECT_TYPE,
            subject_id=job.pk,
            measurement=measurement.to_dict(),
            backend_info=backend.info.to_dict(),
            acting_user=None,
        )
    return report.verdict, {"leakage_report_id": report.pk, "verdict": report.verdict}


def _run_provenance(job: RenderJob, workdir: Path) -> tuple[str, dict[str, Any]]:
    from governance.services.provenance import provenance_sign

    source = stored_file_copy(job.output, workdir, "output")
    signed = workdir / "signed.mp4"
    record = provenance_sign(
        subject_type=SUBJECT_TYPE,
        subject_id=job.pk,
        source=source,
        dest=signed,
        title=f"render-job-{job.pk}.mp4",
        ingredients=[
            ("portrait", _mime(job.portrait.name), job.portrait_sha256),
            ("driving video", _mime(job.driving.name), job.driving_sha256),
        ],
        org_assertion=_org_assertion(job),
        acting_user=None,
    )
    digest = record.file_sha256
    name = f"jobs/outputs/job-{job.pk}-signed-{digest[:12]}.mp4"
    with signed.open("rb") as handle:
        stored = default_storage.save(name, File(handle, name=Path(name).name))
    previous = job.output.name
    job.output = stored
    job.output_sha256 = digest
    job.output_size = signed.stat().st_size
    job.save(update_fields=["output", "output_sha256", "output_size"])
    if previous and previous != stored:
        transaction.on_commit(lambda: default_storage.delete(previous))
    return V.PASSED, {
        "provenance_record_id": record.pk,
        "signed_sha256": digest,
        "validation_state": record.validation_state,
    }


def _mime(name: str) -> str:
    suffix = Path(name).suffix.lower()
    return {
        ".jpg": "image/jpeg",
        ".png": "image/png",
        ".webp": "image/webp",
        ".bmp": "image/bmp",
        ".mp4": "video/mp4",
        ".mkv": "video/x-matroska",
    }.get(suffix, "application/octet-stream")


def _org_assertion(job: RenderJob) -> dict[str, Any]:
    """What the organisation asserts about the output; ids and hashes only, no personal data."""
    import hashlib
    import json

    from governance.models import LeakageReport

    consents = sorted(job.consent_ids)
    report = (
        LeakageReport.objects.filter(subject_type=SUBJECT_TYPE, subject_id=str(job.pk))
        .order_by("-pk")
        .first()
    )
    params = json.dumps(job.parameters, sort_keys=True, separators=(",", ":"))
    return {
        "job_id": job.pk,
        "approval_request_id": job.approval_request_id,
        "consent_record_ids_sha256": [
            hashlib.sha256(f"consent:{cid}".encode()).hexdigest() for cid in consents
        ],
        "model_version": {
            "id": job.model_version_id,
            "name": job.model_version.name,
            "version": job.model_version.version,
            "weights_sha256": job.model_version.weights_sha256,
        },
        "leakage": (
            {
                "report_id": report.pk,
                "verdict": report.verdict,
                "portrait_similarity": report.portrait_stats,
                "performer_similarity": report.performer_stats,
                "baseline_similarity": report.baseline_similarity,
                "faceless_share": report.faceless_share,
                "sampled_frames": report.sampled_frames,
                "backend": report.backend,
                "backend_fingerprint": report.backend_fingerprint,
            }
            if report
            else None
        ),
        "seed": job.parameters.get("seed"),
        "parameters_sha256": hashlib.sha256(params.encode()).hexdigest(),
        "generated_sha256": job.generated_sha256,
    }


STEP_RUNNERS = {
    VerificationStepName.LEAKAGE: _run_leakage,
    VerificationStepName.PROVENANCE: _run_provenance,
}


def render_job_verify_run(*, job_id: int) -> None:
    """Run the pending steps in order; stop at the first that does not pass."""
    job = RenderJob.objects.select_related("model_version").filter(pk=job_id).first()
    if job is None or job.status != S.VERIFYING:
        return
    with scratch_folder("verify", job_id=job_id) as workdir:
        for name in VERIFICATION_CHAIN:
            step = VerificationStep.objects.get(job=job, name=name)
            if step.status == V.PASSED:
                continue
            if step.status != V.PENDING:
                return
            started = timezone.now()
            try:
                status, detail = STEP_RUNNERS[name](job, workdir)
            except Exception as exc:
                logger.exception("verification step %s of job %s failed", name, job_id)
                status, detail = V.FAILED, {"error": f"{type(exc).__name__}: {exc}"[:500]}
            status = {"pass": V.PASSED, "review": V.REVIEW, "fail": V.FAILED}.get(status, status)
            with transaction.atomic():
                job = RenderJob.objects.select_for_update().get(pk=job_id)
                if job.status != S.VERIFYING:
                    return  # cancelled or withdrawn meanwhile
                _step_finish(job=job, name=name, status=status, detail=detail, started=started)
                if status != V.PASSED:
                    to = S.FAILED if "error" in detail else S.QUARANTINED
                    render_job_transition(
                        job=job,
                        to=to,
                        acting_user=None,
                        reason=_quarantine_reason(name, status, detail),
                    )
                    return
        with transaction.atomic():
            job = RenderJob.objects.select_for_update().get(pk=job_id)
            if job.status == S.VERIFYING:
                render_job_publish_locked(job=job, acting_user=None)


def _quarantine_reason(name: str, status: str, detail: dict[str, Any]) -> str:
    if "error" in detail:
        return f"Verification step {name} could not run: {detail['error']}"
    if name == VerificationStepName.LEAKAGE:
        return f"Identity-leakage gate verdict: {detail.get('verdict', status)}."
    return f"Verification step {name}: {status}."


def render_job_publish_locked(*, job: RenderJob, acting_user: User | None) -> None:
    """Publish: every step passed and a valid provenance record covers the stored file."""
    from governance.services.provenance import provenance_record_assert_valid

    failing = [
        step.name for step in VerificationStep.objects.filter(job=job) if step.status != V.PASSED
    ]
    missing = set(VERIFICATION_CHAIN) - set(
        VerificationStep.objects.filter(job=job).values_list("name", flat=True)
    )
    if failing or missing:
        raise RuntimeError(f"job {job.pk} cannot be published: steps {failing or missing} open")
    provenance_record_assert_valid(
        subject_type=SUBJECT_TYPE, subject_id=job.pk, file_sha256=job.output_sha256
    )
    render_job_transition(job=job, to=S.PUBLISHED, acting_user=acting_user)


def render_job_on_leakage_reviewed(event: LeakageReviewed) -> None:
    """A compliance officer released or rejected a quarantined output (governance hook)."""
    if event.subject_type != SUBJECT_TYPE:
        return
    job = RenderJob.objects.select_for_update().filter(pk=int(event.subject_id)).first()
    if job is None or job.status != S.QUARANTINED:
        return
    actor = User.objects.filter(pk=event.acting_user_id).first()
    if event.decision != "release":
        render_job_transition(
            job=job, to=S.REJECTED, acting_user=actor, reason=f"Leakage review: {event.reason}"
        )
        return
    VerificationStep.objects.filter(job=job, name=VerificationStepName.LEAKAGE).update(
        status=V.PASSED, finished_at=timezone.now()
    )
    # Back into the chain for the remaining steps (signing), which runs after commit.
    render_job_transition(
        job=job, to=S.VERIFYING, acting_user=actor, reason=f"Leakage review: {event.reason}"
    )
    from reenactment.tasks import render_job_verify_task

    job_id = job.pk
    transaction.on_commit(lambda: render_job_verify_task.delay(job_id))
