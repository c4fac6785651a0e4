"""Render jobs end to end: API submission, two approvals, real worker processes on Redis,
the tiny model on CPU, the verification chain, cancellation, and a worker killed mid-job."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from rest_framework.test import APIClient

from governance.audit_codes import AuditAction
from governance.integrations.c2pa_signing import VerificationStatus, verify_file
from governance.models import ApprovalStep, AuditEvent, ConsentRecord, LeakageReport
from governance.roles import Role
from governance.services.consents import consent_revoke
from governance.services.provenance import provenance_sign
from governance.services.registry import model_version_register
from reenactment.engine.video_io import probe_video
from reenactment.models import RenderJob, RenderJobStatus, VerificationStep

REPO_ROOT = Path(__file__).resolve().parents[2]


def command_env(platform: Any) -> dict[str, str]:
    """The environment a management command needs to act on this test's database and files."""
    from django.db import connection

    db = connection.settings_dict
    url = f"postgres://{db['USER']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"
    return {
        **os.environ,
        **platform.env,
        "DJANGO_SETTINGS_MODULE": "config.settings.test",
        "DATABASE_URL": url,
    }


pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]
S = RenderJobStatus


def api_as(user: Any) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


def submit(platform: Any, **parameters: Any) -> dict[str, Any]:
    response = submit_response(platform, **parameters)
    assert response.status_code == 201, response.content
    return response.json()


def submit_response(platform: Any, **parameters: Any) -> Any:
    """The requester's submission of the platform's inputs (fast generation settings)."""
    params = {"num_inference_steps": 2, "resolution": 64, "seed": 7, **parameters}
    with platform.driving.open("rb") as driving:
        response = api_as(platform.user(Role.REQUESTER)).post(
            "/api/reenactment/jobs/create/",
            {
                "portrait": _named(platform.portrait_png, "portrait.png"),
                "driving": driving,
                "portrait_subject_id": platform.subject.pk,
                "performer_id": platform.performer.pk,
                "purpose": platform.purpose.pk,
                "channels": ["internal"],
                "territory": "WW",
                "model_version_id": platform.model.pk,
                "title": "integration",
                "parameters": _json(params),
            },
            format="multipart",
        )
    return response


def _named(data: bytes, name: str) -> Any:
    from django.core.files.uploadedfile import SimpleUploadedFile

    return SimpleUploadedFile(name, data)


def _json(value: Any) -> str:
    import json

    return json.dumps(value)


def approve_all(platform: Any, job_id: int) -> None:
    """The reviewer, then the compliance officer, approve through the API."""
    job = RenderJob.objects.get(pk=job_id)
    for step in ApprovalStep.objects.filter(request_id=job.approval_request_id).order_by("order"):
        decider = platform.user(Role(step.role))
        response = api_as(decider).post(
            f"/api/governance/approvals/steps/{step.pk}/decide/",
            {"verdict": "approve", "reason": ""},
            format="json",
        )
        assert response.status_code == 200, response.content


def wait_for(predicate: Callable[[], bool], timeout: float, what: str, worker: Any = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.25)
    log = worker.log()[-4000:] if worker else ""
    raise AssertionError(f"timed out after {timeout}s waiting for {what}\n{log}")


def job_status(job_id: int) -> str:
    return RenderJob.objects.values_list("status", flat=True).get(pk=job_id)


def actions(job_id: int) -> list[str]:
    return [
        AuditAction(code).api_name
        for code in AuditEvent.objects.filter(
            target_type="reenactment.renderjob", target_id=str(job_id)
        )
        .order_by("sequence")
        .values_list("action", flat=True)
    ]


def stored_outputs(media_root: Any) -> list[str]:
    folder = media_root / "jobs" / "outputs"
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def register_demo_copy(
    platform: Any, name: str, change: Callable[[Path, dict[str, Any]], None]
) -> None:
    """Register, as the platform's model, a copy of the demo model that ``change`` edited (its
    folder and its ``model_index.json``, written back afterwards)."""
    folder = Path(settings.MODELS_DIR) / name
    shutil.copytree(Path(settings.MODELS_DIR) / "demo-tiny", folder, dirs_exist_ok=True)
    index = json.loads((folder / "model_index.json").read_text())
    change(folder, index)
    (folder / "model_index.json").write_text(json.dumps(index))
    platform.model = model_version_register(
        name=name,
        version="1",
        folder=folder,
        licence=platform.model.licence,
        is_demonstration=True,
        acting_user=platform.user(Role.DATA_STEWARD),
    )


def test_submit_approve_generate_and_verify_through_a_real_worker(platform, media_root):
    worker = platform.worker()
    job = submit(platform, color_match="reference")
    assert job["status"] == S.AWAITING_APPROVAL
    job_id = job["id"]
    approve_all(platform, job_id)

    done = {S.PUBLISHED, S.QUARANTINED, S.FAILED, S.REJECTED}
    wait_for(lambda: job_status(job_id) in done, 240, "the chain to finish", worker)
    finished = RenderJob.objects.get(pk=job_id)
    # The tiny demonstration network's output is not a face: the leakage gate must notice
    # that faces are missing and quarantine it, never publish it.
    assert finished.status == S.QUARANTINED, finished.status_reason
    report = LeakageReport.objects.get(subject_type="reenactment.renderjob", subject_id=job_id)
    assert report.verdict == "fail"
    steps = dict(VerificationStep.objects.filter(job=finished).values_list("name", "status"))
    assert steps == {"leakage": "failed", "provenance": "pending"}

    assert finished.attempts == 1
    # The requester's colour matching reached the engine (and the re-run below repeats it).
    assert finished.reproducibility["parameters"]["color_match"] == "reference"
    assert finished.progress_percent == 100.0
    assert finished.progress_frames == finished.progress_total_frames == 24
    assert finished.progress_step == finished.progress_total_steps == 2
    assert [name for name in stored_outputs(media_root)] == [os.path.basename(finished.output.name)]
    info = probe_video(media_root / finished.output.name)
    assert info.frame_count == 24 and float(info.fps) == 24.0 and info.has_audio
    assert actions(job_id) == [
        "render_job.submit",
        "render_job.await_approval",
        "render_job.approve",
        "render_job.queue",
        "render_job.start",
        "render_job.generate",
        "render_job.verify",
        "render_job.verification_step",
        "render_job.quarantine",
    ]

    # The reproducibility manifest re-runs the job: same model files, inputs, parameters, seeds
    # and thread count (the command restarts itself with the worker's OMP_NUM_THREADS). The
    # manifests must be identical and the frames nearly so: exact frames are not guaranteed on
    # CPU across processes (kernel choice can depend on memory alignment), so the strict
    # default reports "NOT REPRODUCED" with the measured difference when they are not.
    env = {k: v for k, v in command_env(platform).items() if k != "OMP_NUM_THREADS"}
    rerun = subprocess.run(
        [sys.executable, "manage.py", "job_reproduce", str(job_id), "--json"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert rerun.returncode in (0, 1), rerun.stdout + rerun.stderr
    report = json.loads(rerun.stdout[rerun.stdout.index("{") :])
    assert report["same_job"] and report["manifest_differences"] == []
    assert report["video"]["frames"] == [24, 24] and report["video"]["comparable"]
    assert report["video"]["min_psnr"] is None or report["video"]["min_psnr"] > 30
    assert report["reproduced"] == (report["video"]["max_abs"] == 0)

    # A tiny-model pipeline output signs and verifies like any other video.
    signed = platform.tmp / "signed.mp4"
    record = provenance_sign(
        subject_type="test.output",
        subject_id=job_id,
        source=media_root / finished.output.name,
        dest=signed,
        title="tiny.mp4",
        ingredients=[("portrait", "image/png", "0" * 64)],
        org_assertion={"job_id": job_id},
        acting_user=None,
    )
    anchors = Path(platform.env["C2PA_TRUST_ANCHORS"]).read_bytes()
    assert record.status == "trusted"
    assert verify_file(signed, trust_anchors_pem=anchors).status is VerificationStatus.TRUSTED

    body = api_as(platform.user(Role.REQUESTER)).get(f"/api/reenactment/jobs/{job_id}/").json()
    assert body["status"] == S.QUARANTINED
    assert body["progress"]["percent"] == 100.0
    workers = api_as(platform.user(Role.OPERATOR)).get("/api/reenactment/workers/").json()
    assert [w["nodename"] for w in workers] == [worker.nodename]
    assert workers[0]["device"]["kind"] == "cpu"
    assert workers[0]["loaded_models"] == [platform.model.pk]


LONG = {"num_inference_steps": 200, "resolution": 64}


def running_with_progress(job_id: int) -> bool:
    job = RenderJob.objects.get(pk=job_id)
    return job.status == S.RUNNING and job.progress_step >= 2


def test_cancel_while_running_stops_within_a_step_and_leaves_no_output(platform, media_root):
    worker = platform.worker()
    job_id = submit(platform, **LONG)["id"]
    approve_all(platform, job_id)
    wait_for(lambda: running_with_progress(job_id), 120, "generation to start", worker)

    response = api_as(platform.user(Role.REQUESTER)).post(
        f"/api/reenactment/jobs/{job_id}/cancel/", {"reason": "changed my mind"}, format="json"
    )
    assert response.status_code == 200, response.content
    assert response.json()["status"] == S.CANCELLED
    # The worker notices at its next step: the lease stops being renewed soon after.
    time.sleep(1.0)
    stamp = RenderJob.objects.get(pk=job_id).lease_renewed_at
    time.sleep(2.0)
    assert RenderJob.objects.get(pk=job_id).lease_renewed_at == stamp
    assert job_status(job_id) == S.CANCELLED
    assert stored_outputs(media_root) == []
    assert "render_job.generate" not in actions(job_id)


def test_a_resolution_the_model_cannot_tile_is_refused_at_submission(platform, media_root):
    # The serializer only knows 32..1024; the model's autoencoder tiles 8 px (demo-tiny), so
    # 100 is refused before any approval is asked for, and nothing is left behind.
    response = submit_response(platform, resolution=100)
    assert response.status_code == 400, response.content
    body = response.json()["error"]
    assert body["code"] == "resolution_unsupported", body
    assert "multiples of 8 px" in body["message"] and "try 96" in body["message"]
    assert not RenderJob.objects.exists()
    assert not (media_root / "jobs").exists() or not any((media_root / "jobs").rglob("*.*"))


def test_a_model_with_a_detail_refiner_runs_it_and_refuses_sizes_it_cannot_refine(
    platform, media_root
):
    # The demo model plus a (perturbed, so it changes frames) detail refiner at its 64 px: the
    # registry checks the refiner like the networks, a job asking for another size is refused
    # at submission unless it turns the refiner off, and the worker runs it and records that.
    import torch

    from reenactment.engine.networks import ReferenceDetailRefiner

    def add_refiner(folder: Path, index: dict[str, Any]) -> None:
        torch.manual_seed(0)
        refiner = ReferenceDetailRefiner(
            sample_size=64,
            channels=(8, 16),
            attention_levels=(1,),
            attention_heads=2,
            norm_groups=4,
        )
        torch.nn.init.normal_(refiner.conv_out.weight, std=0.05)
        refiner.save_pretrained(folder / "detail_refiner", safe_serialization=True)
        index["detail_refiner"] = [
            "reenactment.engine.networks.detail_refiner",
            "ReferenceDetailRefiner",
        ]

    register_demo_copy(platform, "demo-tiny-refined", add_refiner)
    assert "detail_refiner" in platform.model.architecture["components"]

    response = submit_response(platform, resolution=128)
    assert response.status_code == 400, response.content
    body = response.json()["error"]
    assert body["code"] == "resolution_unsupported", body
    assert "detail refiner works at 64 px" in body["message"], body
    assert not RenderJob.objects.exists()
    assert submit_response(platform, resolution=128, refine_details=False).status_code == 201

    worker = platform.worker()
    job_id = submit(platform)["id"]
    approve_all(platform, job_id)
    done = {S.PUBLISHED, S.QUARANTINED, S.FAILED, S.REJECTED}
    wait_for(lambda: job_status(job_id) in done, 240, "the chain to finish", worker)
    job = RenderJob.objects.get(pk=job_id)
    assert job.status != S.FAILED, job.status_reason
    parameters = job.reproducibility["parameters"]
    assert parameters["refine_details"] is True
    assert parameters["components"]["detail_refiner"].endswith(".ReferenceDetailRefiner")


def test_settings_the_model_refuses_fail_the_job_with_the_reason(platform, media_root):
    # A model folder whose own recommendation only the loaded networks can refuse (a context
    # window longer than the denoiser's temporal table; registration checks the rest): the job
    # fails with the pipeline's reason, not "see logs", so an admin can fix the model.
    def recommend_a_long_window(folder: Path, index: dict[str, Any]) -> None:
        index["_generation_defaults"] = {
            **index.get("_generation_defaults", {}),
            "context_frames": 48,
        }

    register_demo_copy(platform, "demo-tiny-bad-defaults", recommend_a_long_window)
    worker = platform.worker()
    job_id = submit(platform)["id"]
    approve_all(platform, job_id)
    wait_for(lambda: job_status(job_id) == S.FAILED, 120, "the job to fail", worker)

    reason = RenderJob.objects.get(pk=job_id).status_reason
    assert reason.startswith("The model refused the generation settings: "), reason
    assert "context_frames must be within 1..32 (the temporal position table), got 48" in reason
    assert "see logs" not in reason
    assert stored_outputs(media_root) == []
    assert "render_job.generate" not in actions(job_id)


def pool_children(main_pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(main_pid)], capture_output=True, text=True)
    return [int(pid) for pid in out.stdout.split()]


def test_a_worker_killed_mid_generation_is_redelivered_and_the_job_completes_once(
    platform, media_root
):
    first, second = platform.worker(name="a"), platform.worker(name="b")
    job_id = submit(platform, num_inference_steps=40, resolution=64)["id"]
    approve_all(platform, job_id)
    wait_for(lambda: running_with_progress(job_id), 120, "generation to start", first)

    running_on = RenderJob.objects.get(pk=job_id).worker
    victim = first if running_on == first.nodename else second
    children = pool_children(victim.process.pid)
    assert children, f"no pool process under {victim.nodename}"
    for pid in children:
        os.kill(pid, signal.SIGKILL)
    # The killed attempt could not remove its scratch folder (inputs copied, output half made).
    scratch = Path(settings.SCRATCH_DIR) / socket.gethostname()
    left = [path for pid in children for path in scratch.glob(f"job-{job_id}.pid{pid}.*")]
    assert left, sorted(path.name for path in scratch.iterdir())

    done = {S.PUBLISHED, S.QUARANTINED, S.FAILED, S.REJECTED}
    wait_for(lambda: job_status(job_id) in done, 300, "the redelivered job to finish", victim)
    job = RenderJob.objects.get(pk=job_id)
    assert job.status == S.QUARANTINED, job.status_reason
    assert job.attempts == 2
    events = actions(job_id)
    assert events.count("render_job.start") == 1
    assert events.count("render_job.restart") == 1
    assert events.count("render_job.generate") == 1
    assert stored_outputs(media_root) == [os.path.basename(job.output.name)]
    # The next attempt swept it: no scratch folder outlives the job.
    assert not [path.name for path in scratch.iterdir()]


def test_revoking_a_consent_blocks_pending_jobs_and_stops_running_ones(platform, media_root):
    worker = platform.worker()
    pending = submit(platform)["id"]
    running = submit(platform, **LONG)["id"]
    approve_all(platform, running)
    wait_for(lambda: running_with_progress(running), 120, "generation to start", worker)

    consent = ConsentRecord.objects.get(person=platform.subject)
    consent_revoke(
        consent=consent,
        reason="subject withdrew",
        acting_user=platform.user(Role.COMPLIANCE_OFFICER),
    )
    for job_id in (pending, running):
        job = RenderJob.objects.get(pk=job_id)
        assert job.status == S.CANCELLED
        assert f"consent #{consent.pk} revoked" in job.status_reason
    # The pending job's approval request is closed too: nobody can approve it any more.
    assert RenderJob.objects.get(pk=pending).approval_request.status == "cancelled"
    # The running generation stops: its lease is no longer renewed, and nothing is stored.
    time.sleep(1.0)
    stamp = RenderJob.objects.get(pk=running).lease_renewed_at
    time.sleep(2.0)
    assert RenderJob.objects.get(pk=running).lease_renewed_at == stamp
    assert stored_outputs(media_root) == []
