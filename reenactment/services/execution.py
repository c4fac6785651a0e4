"""Running a job on a worker: claim, generate with progress and cancellation, store the output.

Idempotent by job status: a redelivered or duplicate task for a job that is not QUEUED (or a
RUNNING job whose worker is gone) does nothing. The claim is a row lock, so two workers can
never both start the same job.
"""

from __future__ import annotations

import logging
import os
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.files.base import File
from django.core.files.storage import default_storage
from django.db import connection, transaction
from django.utils import timezone

from config.api import ApplicationError
from governance.audit_codes import AuditAction
from governance.services.audit import audit_event_record
from reenactment import runtime
from reenactment.models import RenderJob, RenderJobStatus
from reenactment.scratch import scratch_folder
from reenactment.services.jobs import (
    SUBJECT_TYPE,
    render_job_release_assert,
    render_job_transition,
    sha256_of_file,
    stored_file_copy,
)

logger = logging.getLogger(__name__)
S = RenderJobStatus


class TransientGenerationError(Exception):
    """A failure worth retrying on another attempt (device out of memory, storage hiccup)."""


@dataclass(frozen=True)
class Claim:
    job_id: int
    token: str
    attempt: int


class JobLeaseHeld(Exception):  # noqa: N818 - a state the task answers by retrying later
    """The job is RUNNING under a lease that has not expired: retry after ``retry_in`` s.

    A message comes back while a job runs when its worker process died (the lease then stops
    being renewed and expires) or, rarely, when the broker redelivers a long job early; waiting
    for the lease tells the two apart without ever running a job twice at once.
    """

    def __init__(self, job_id: int, retry_in: float) -> None:
        super().__init__(f"render job {job_id} is leased for another {retry_in:.1f} s")
        self.retry_in = retry_in


@transaction.atomic(durable=True)
def render_job_claim(*, job_id: int, worker: str) -> Claim | None:
    """Take the job for this worker, or None when there is nothing to do.

    QUEUED -> RUNNING. A RUNNING job whose lease expired (its process died: acks_late +
    reject_on_worker_lost returned the message) is taken over and recorded as a restart, not a
    second start; one whose lease is fresh raises :class:`JobLeaseHeld`.
    """
    job = RenderJob.objects.select_for_update().filter(pk=job_id).first()
    if job is None:
        logger.warning("render job %s does not exist; message dropped", job_id)
        return None
    now = timezone.now()
    if job.status == S.RUNNING:
        timeout = timedelta(seconds=settings.RENDER_LEASE_TIMEOUT)
        if job.lease_renewed_at is not None and now - job.lease_renewed_at < timeout:
            remaining = (job.lease_renewed_at + timeout - now).total_seconds()
            raise JobLeaseHeld(job.pk, max(remaining, 0.5))
        job.attempts += 1
        job.worker = worker
        job.claim_token = secrets.token_hex(16)
        job.lease_renewed_at = now
        job.save(update_fields=["attempts", "worker", "claim_token", "lease_renewed_at"])
        audit_event_record(
            actor=None,
            action=AuditAction.RENDER_JOB_RESTART,
            target_type=SUBJECT_TYPE,
            target_id=job.pk,
            payload={"attempt": job.attempts, "worker": worker},
        )
        return Claim(job.pk, job.claim_token, job.attempts)
    if job.status != S.QUEUED:
        logger.info("render job %s is %s; nothing to run", job_id, job.status)
        return None
    try:
        render_job_release_assert(job)
    except ApplicationError as exc:
        # The approval expired or a consent lapsed while the job waited for a GPU.
        render_job_transition(job=job, to=S.REJECTED, acting_user=None, reason=exc.message)
        return None
    job.attempts += 1
    job.worker = worker
    job.claim_token = secrets.token_hex(16)
    job.lease_renewed_at = now
    job.progress_percent = 0.0
    render_job_transition(
        job=job,
        to=S.RUNNING,
        acting_user=None,
        payload={"attempt": job.attempts, "worker": worker},
        update_fields=["attempts", "worker", "claim_token", "lease_renewed_at", "progress_percent"],
    )
    return Claim(job.pk, job.claim_token, job.attempts)


class LeaseKeeper:
    """Renews the claim's lease from a thread for as long as this process generates."""

    def __init__(self, claim: Claim) -> None:
        self.claim = claim
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="job-lease", daemon=True)

    def _run(self) -> None:
        try:
            while not self._stop.wait(settings.RENDER_LEASE_INTERVAL):
                RenderJob.objects.filter(
                    pk=self.claim.job_id, status=S.RUNNING, claim_token=self.claim.token
                ).update(lease_renewed_at=timezone.now())
        finally:
            connection.close()  # this thread's own database connection

    def __enter__(self) -> LeaseKeeper:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


class ProgressReporter:
    """Writes progress to the job at most once a second and says when to stop.

    The pipeline calls it after every denoising step; it also reads back ``cancel_requested``
    and the status, so a cancelled job (or one taken over by another worker) stops at the next
    step.
    """

    def __init__(self, claim: Claim, *, interval: float = 1.0) -> None:
        self.claim = claim
        self.interval = interval
        self._last = 0.0
        self._stop = False

    def __call__(self, info: dict[str, Any]) -> None:
        now = time.monotonic()
        if now - self._last < self.interval:
            return
        self._last = now
        updated = RenderJob.objects.filter(
            pk=self.claim.job_id,
            status=S.RUNNING,
            claim_token=self.claim.token,
            cancel_requested=False,
        ).update(
            progress_percent=round(float(info.get("percent", 0.0)), 2),
            progress_step=int(info.get("step", 0)),
            progress_total_steps=int(info.get("total_steps", 0)),
            progress_frames=int(info.get("frames_done", 0)),
            progress_total_frames=int(info.get("total_frames", 0) or 0),
            progress_updated_at=timezone.now(),
        )
        # Nothing updated: cancelled, or no longer ours.
        self._stop = updated == 0

    def should_stop(self) -> bool:
        if self._stop:
            return True
        # Between throttled writes, check the flag cheaply once per step.
        return not RenderJob.objects.filter(
            pk=self.claim.job_id,
            status=S.RUNNING,
            claim_token=self.claim.token,
            cancel_requested=False,
        ).exists()


def _generation_parameters(job: RenderJob) -> dict[str, Any]:
    # The model's own recommended settings, then what the requester chose.
    params = {**runtime.generation_defaults(job.model_version), **job.parameters}
    allowed = {
        "num_inference_steps",
        "guidance_scale",
        "seed",
        "resolution",
        "paste_back",
        "strength",
        "initial_latents",
        "color_match",
        "refine_details",
        "context_frames",
        "context_overlap",
        "detect_every",
    }
    return {key: value for key, value in params.items() if key in allowed}


def _progress_callback(reporter: ProgressReporter) -> Callable[..., dict[str, Any]]:
    """The pipeline's per-step callback, reporting the job's progress."""

    def on_step(pipe: Any, step: int, timestep: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
        fraction = kwargs.get("progress") or 0.0
        reporter(
            {
                "percent": 100.0 * fraction,
                "step": step + 1,
                "total_steps": kwargs.get("num_inference_steps", 0),
                "frames_done": kwargs.get("frames_done", 0),
                "total_frames": kwargs.get("total_frames") or 0,
            }
        )
        return {}

    return on_step


def render_job_generate(*, claim: Claim) -> None:
    """Run the engine for a claimed job and hand the output to the verification chain."""
    from reenactment.engine.pipeline_reenactment import GenerationCancelled

    job = RenderJob.objects.select_related("model_version").get(pk=claim.job_id)
    reporter = ProgressReporter(claim)
    with scratch_folder("job", job_id=job.pk) as workdir:
        try:
            portrait = stored_file_copy(job.portrait, workdir, "portrait")
            driving = stored_file_copy(job.driving, workdir, "driving")
            pipeline = runtime.pipeline_for(job.model_version)

            started = time.monotonic()
            out_path = workdir / "output.mp4"
            with LeaseKeeper(claim):
                result = pipeline(
                    portrait,
                    driving,
                    output_path=out_path,
                    callback_on_step_end=_progress_callback(reporter),
                    cancel=reporter.should_stop,
                    **_generation_parameters(job),
                )
            elapsed = time.monotonic() - started
            render_job_generation_store(
                claim=claim,
                path=out_path,
                seconds=elapsed,
                parameters=result.parameters,
                frames=result.num_frames,
            )
        except GenerationCancelled:
            logger.info("render job %s stopped: cancelled or taken over", job.pk)
        except Exception as exc:
            _fail_or_retry(claim=claim, exc=exc)
            raise


def _fail_or_retry(*, claim: Claim, exc: Exception) -> None:
    from reenactment.engine import preprocessing, video_io
    from reenactment.engine.pipeline_reenactment import PipelineInputError

    if isinstance(exc, TransientGenerationError | torch_oom()):
        return  # the task retries; the job stays RUNNING and the next attempt takes it over
    if isinstance(exc, video_io.MediaError | preprocessing.PreprocessingError):
        reason = str(exc)
    elif isinstance(exc, PipelineInputError):
        # A setting the API cannot check alone (e.g. a resolution this model's autoencoder
        # cannot tile) or a bad recommendation in the model's folder: say which, so the
        # requester can resubmit or an admin can fix the model, instead of "see logs".
        reason = f"The model refused the generation settings: {exc}"
    else:
        reason = f"Generation failed ({type(exc).__name__}); see logs."
    render_job_fail(claim=claim, reason=reason)


def torch_oom() -> type[BaseException]:
    import torch

    return torch.OutOfMemoryError


@transaction.atomic(durable=True)
def render_job_fail(*, claim: Claim, reason: str) -> None:
    job = RenderJob.objects.select_for_update().get(pk=claim.job_id)
    if job.status != S.RUNNING or job.claim_token != claim.token:
        return
    render_job_transition(job=job, to=S.FAILED, acting_user=None, reason=reason)


def render_job_generation_store(
    *,
    claim: Claim,
    path: Path,
    seconds: float,
    parameters: dict[str, Any],
    frames: int | None = None,
) -> None:
    """Store the finished video and move the job to GENERATED, exactly once per job.

    The file is stored under a name unique to this attempt first, then the row is updated under
    a lock; if the claim is no longer ours (cancelled, or taken over), the stored file is
    removed again, so a job never ends with two outputs.
    """
    digest = sha256_of_file(path)
    name = f"jobs/outputs/job-{claim.job_id}-attempt-{claim.attempt}-{digest[:12]}.mp4"
    with path.open("rb") as handle:
        stored = default_storage.save(name, File(handle, name=os.path.basename(name)))
    kept = _generation_record(
        claim=claim,
        stored=stored,
        digest=digest,
        seconds=seconds,
        parameters=parameters,
        size=path.stat().st_size,
        frames=frames,
    )
    if not kept:
        default_storage.delete(stored)


@transaction.atomic(durable=True)
def _generation_record(
    *,
    claim: Claim,
    stored: str,
    digest: str,
    seconds: float,
    parameters: dict[str, Any],
    size: int,
    frames: int | None,
) -> bool:
    from reenactment.services.verification import render_job_verification_start

    job = RenderJob.objects.select_for_update().get(pk=claim.job_id)
    if job.status != S.RUNNING or job.claim_token != claim.token:
        return False
    job.output = stored
    job.output_sha256 = digest
    job.generated_sha256 = digest
    job.output_size = size
    job.generation_seconds = seconds
    job.progress_percent = 100.0
    # The last progress report comes from the last denoising step, before the last frames are
    # decoded and written: the finished job shows every frame and step done.
    job.progress_step = job.progress_total_steps
    if frames is not None:
        job.progress_frames = job.progress_total_frames = frames
    job.reproducibility = _reproducibility(job, parameters)
    render_job_transition(
        job=job,
        to=S.GENERATED,
        acting_user=None,
        payload={"output_sha256": digest, "seconds": round(seconds, 3), "attempt": claim.attempt},
        update_fields=[
            "output",
            "output_sha256",
            "generated_sha256",
            "output_size",
            "generation_seconds",
            "progress_percent",
            "progress_step",
            "progress_frames",
            "progress_total_frames",
            "reproducibility",
        ],
    )
    render_job_verification_start(job=job)
    return True


def _reproducibility(job: RenderJob, parameters: dict[str, Any]) -> dict[str, Any]:
    import torch

    from governance.reproducibility import reproducibility_manifest_build, runtime_current

    device = runtime.device_choice().device
    return reproducibility_manifest_build(
        model_version=job.model_version,
        parameters=parameters,
        inputs={"portrait": job.portrait_sha256, "driving": job.driving_sha256},
        device=device,
        # CPU float sums depend on the thread count (reduction order): a re-run needs the same.
        runtime={**runtime_current(device), "torch_threads": torch.get_num_threads()},
    )
