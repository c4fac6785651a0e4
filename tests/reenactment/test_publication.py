"""The path to publication with an output that keeps the portrait's identity.

The tiny demonstration network's output is not a face (test_job_flow shows the gate quarantines
it), so here the generation result is a faithful video (the portrait with small head motion)
handed to the real services in place of the engine's output. Everything after that is real:
the verification chain on a worker process, the leakage gate with dlib, C2PA signing with a dev
CA, publication, signed download links, the public verifier, webhooks, and revocation.
"""

from __future__ import annotations

import hashlib
import hmac
import http.server
import json
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from config.celery_app import app as celery_app
from governance.integrations.c2pa_signing import VerificationStatus, verify_file
from governance.models import ConsentRecord, ProvenanceRecord
from governance.roles import Role
from governance.services.consents import consent_revoke
from reenactment.engine.demo_media import demo_portrait
from reenactment.engine.video_io import make_test_clip
from reenactment.models import RenderJob, RenderJobStatus, VerificationStep
from reenactment.services.execution import render_job_claim, render_job_generation_store
from tests.reenactment.test_job_flow import (
    api_as,
    approve_all,
    command_env,
    job_status,
    submit,
    wait_for,
)

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]
S = RenderJobStatus
REPO_ROOT = Path(__file__).resolve().parents[2]


def faithful_output(path: Path, frames: int = 24) -> Path:
    """The portrait's face region with a small sway: what a perfect reenactment looks like."""
    face = Image.fromarray(demo_portrait()[20:340, 90:410]).resize((256, 256))
    clip = []
    for i in range(frames):
        dx, dy = 4 * np.sin(i / 5), 2 * np.sin(i / 7)
        moved = face.transform((256, 256), Image.Transform.AFFINE, (1, 0, dx, 0, 1, dy))
        clip.append(np.asarray(moved))
    return make_test_clip(path, clip, 24)


def generate_faithfully_and_verify(job_id: int, tmp_path: Path, worker: Any) -> RenderJob:
    """Stand in for the GPU worker with :func:`faithful_output`, then wait for the verification
    chain on ``worker`` to publish, quarantine or fail the job."""
    claim = render_job_claim(job_id=job_id, worker="test-generator")
    assert claim is not None
    render_job_generation_store(
        claim=claim,
        path=faithful_output(tmp_path / "generated.mp4"),
        seconds=1.0,
        parameters={"seed": 7, "num_inference_steps": 2},
    )
    wait_for(
        lambda: job_status(job_id) in {S.PUBLISHED, S.QUARANTINED, S.FAILED},
        180,
        "verification",
        worker,
    )
    return RenderJob.objects.get(pk=job_id)


class Receiver(http.server.BaseHTTPRequestHandler):
    received: list[dict[str, Any]] = []

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.received.append({"headers": dict(self.headers), "body": body})
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def webhook_receiver():
    Receiver.received = []
    server = http.server.HTTPServer(("127.0.0.1", 0), Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/hook", Receiver.received
    server.shutdown()


def test_a_faithful_output_is_verified_signed_published_downloaded_and_withdrawn(
    platform, media_root, tmp_path, webhook_receiver
):
    url, received = webhook_receiver
    requester = platform.user(Role.REQUESTER)
    created = api_as(requester).post(
        "/api/reenactment/webhooks/create/", {"url": url}, format="json"
    )
    assert created.status_code == 201, created.content
    secret = created.json()["secret"]

    # Only the default queue: verification runs on the worker, generation is ours below.
    worker = platform.worker(queues="default")
    job_id = submit(platform)["id"]
    approve_all(platform, job_id)
    assert job_status(job_id) == S.QUEUED
    job = generate_faithfully_and_verify(job_id, tmp_path, worker)
    assert job.status == S.PUBLISHED, job.status_reason
    steps = dict(VerificationStep.objects.filter(job=job).values_list("name", "status"))
    assert steps == {"leakage": "passed", "provenance": "passed"}
    record = ProvenanceRecord.objects.get(subject_id=str(job_id))
    assert record.status == "trusted" and record.file_sha256 == job.output_sha256
    assert job.generated_sha256 != job.output_sha256  # the stored file is the signed one

    # A signed, short-lived link, redeemed by the same user.
    link = api_as(requester).post(f"/api/reenactment/jobs/{job_id}/download-link/").json()
    path = link["url"].split("testserver", 1)[1]
    response = api_as(requester).get(path)
    assert response.status_code == 200
    downloaded = tmp_path / "downloaded.mp4"
    downloaded.write_bytes(b"".join(response.streaming_content))
    assert hashlib.sha256(downloaded.read_bytes()).hexdigest() == job.output_sha256
    assert api_as(platform.user(Role.REVIEWER)).get(path).status_code == 403

    result = verify_file(
        downloaded, trust_anchors_pem=Path(platform.env["C2PA_TRUST_ANCHORS"]).read_bytes()
    )
    assert result.status is VerificationStatus.TRUSTED
    assert result.org_assertion["job_id"] == job_id
    assert (
        result.org_assertion["model_version"]["weights_sha256"] == job.model_version.weights_sha256
    )
    assert result.org_assertion["leakage"]["verdict"] == "pass"
    assert "Portrait" not in json.dumps(result.org_assertion)  # ids and hashes, no names

    # The public verifier: a verdict for every file, never a server error.
    verifier = api_as(platform.user(Role.OPERATOR))
    with downloaded.open("rb") as handle:
        body = verifier.post("/api/provenance/verify", {"file": handle}, format="multipart").json()
    assert body["status"] == "trusted"
    assert body["organisation_assertion"]["job_id"] == job_id
    damaged = bytearray(downloaded.read_bytes())
    damaged[len(damaged) // 2] ^= 0xFF
    (tmp_path / "damaged.mp4").write_bytes(bytes(damaged))
    with (tmp_path / "damaged.mp4").open("rb") as handle:
        answer = verifier.post("/api/provenance/verify", {"file": handle}, format="multipart")
    assert answer.status_code == 200 and answer.json()["status"] == "invalid"
    command = subprocess.run(
        [
            sys.executable,
            "manage.py",
            "provenance_verify",
            str(downloaded),
            "--trust-anchors",
            platform.env["C2PA_TRUST_ANCHORS"],
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        env=command_env(platform),
    )
    assert command.returncode == 0, command.stdout + command.stderr
    assert "Trusted" in command.stdout

    # Revoking the performer's consent withdraws the published output.
    consent = ConsentRecord.objects.get(person=platform.performer)
    consent_revoke(
        consent=consent,
        reason="performer asked",
        acting_user=platform.user(Role.COMPLIANCE_OFFICER),
    )
    assert job_status(job_id) == S.WITHDRAWN
    assert api_as(requester).get(path).status_code == 410

    # Webhooks: every state change, HMAC-signed, delivered by the worker.
    wait_for(lambda: any(b"job.withdrawn" in r["body"] for r in received), 60, "webhooks", worker)
    events = [json.loads(r["body"])["event"] for r in received]
    for expected in [
        "job.awaiting_approval",
        "job.queued",
        "job.running",
        "job.generated",
        "job.verifying",
        "job.published",
        "job.withdrawn",
    ]:
        assert expected in events
    for item in received:
        headers = {k.lower(): v for k, v in item["headers"].items()}
        stamp = headers["x-reenactment-timestamp"]
        mac = hmac.new(secret.encode(), stamp.encode() + b"." + item["body"], hashlib.sha256)
        assert headers["x-reenactment-signature"] == f"sha256={mac.hexdigest()}"

    # Nothing is left for a generation worker: the job was generated here.
    with celery_app.connection_for_write() as conn:
        conn.default_channel.queue_purge("gpu")
