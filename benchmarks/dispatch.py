"""Approval-to-task-start latency, and the platform's overhead per job vs generation time.

Runs the real thing on a throw-away PostgreSQL database and the Redis broker: the demo data
(`demo_seed`, `demo_jobs_seed`), one real Celery worker process, and render jobs submitted,
approved twice and executed through the services.

* Latency: for each of ``--jobs`` jobs, the time from the final approval's commit to the
  worker's claim (``started_at``); the job is then cancelled and the worker left idle before
  the next one, so no job waits behind another.
* Overhead: ``--full`` jobs run to the end of the chain; everything except the engine's own
  generation time (submission checks, approvals, dispatch, claim, storage, verification) as a
  ratio to that generation time.

    .venv/bin/python benchmarks/dispatch.py [--jobs 50] [--full 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
WORK = Path(tempfile.mkdtemp(prefix="dispatch-bench-"))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.test")
os.environ.setdefault("MODELS_DIR", str(WORK / "models"))
os.environ.setdefault("MEDIA_ROOT", str(WORK / "media"))
os.environ.setdefault("PLATFORM_VAR_DIR", str(WORK / "var"))

import django  # noqa: E402

django.setup()

from django.conf import settings  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connection  # noqa: E402
from django.utils import timezone  # noqa: E402


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = (len(ordered) - 1) * q
    low, high = int(index), min(int(index) + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (index - low)


def wait(predicate, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise TimeoutError("timed out")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=50)
    parser.add_argument("--full", type=int, default=3)
    args = parser.parse_args()

    from governance.integrations.dev_ca import generate_dev_ca

    ca = generate_dev_ca(WORK / "ca")
    settings.C2PA_SIGNER_CHAIN, settings.C2PA_SIGNER_KEY = ca.chain, ca.key
    settings.C2PA_TRUST_ANCHORS = ca.root
    old_name = connection.settings_dict["NAME"]
    test_name = connection.creation.create_test_db(verbosity=0, autoclobber=True)
    worker = None
    try:
        call_command("demo_seed", stdout=open(os.devnull, "w"))
        call_command("demo_jobs_seed", stdout=open(os.devnull, "w"))
        db = connection.settings_dict
        env = {
            **os.environ,
            "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST'] or '127.0.0.1'}:"
            f"{db['PORT'] or 5432}/{test_name}",
            "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
            "C2PA_SIGNER_CHAIN": str(ca.chain),
            "C2PA_SIGNER_KEY": str(ca.key),
            "C2PA_TRUST_ANCHORS": str(ca.root),
            "OMP_NUM_THREADS": "1",
        }
        from config.celery_app import app

        with app.connection_for_write() as conn:
            for queue in ("default", "gpu"):
                conn.default_channel.queue_purge(queue)
        worker = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "config",
                "worker",
                "-Q",
                "default,gpu",
                "--concurrency",
                "1",
                "-n",
                "bench@%h",
                "--without-gossip",
                "--without-mingle",
                "--loglevel",
                "WARNING",
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        run(args)
    finally:
        if worker is not None:
            worker.terminate()
            worker.wait(timeout=60)
        connection.creation.destroy_test_db(old_name, verbosity=0)


def run(args: argparse.Namespace) -> None:
    from governance.models import ApprovalStep, ModelVersion, Person, Purpose, User
    from governance.services.approvals import approval_decide
    from reenactment.engine.demo_media import demo_portrait
    from reenactment.models import RenderJob, WorkerHeartbeat
    from reenactment.services.identity import render_job_identity_checks
    from reenactment.services.inputs import render_job_inputs_check
    from reenactment.services.jobs import render_job_cancel, render_job_submit

    users = {u.username: u for u in User.objects.filter(username__startswith="demo-")}
    subject, performer = Person.objects.order_by("pk")[:2]
    model = ModelVersion.objects.get()
    purpose = Purpose.objects.get(pk="entertainment")
    demo = Path(settings.VAR_DIR) / "demo"
    del demo_portrait

    def submit(parameters: dict) -> tuple[RenderJob, float]:
        started = time.perf_counter()
        with (
            (demo / "portrait.png").open("rb") as portrait,
            (demo / "driving.mp4").open("rb") as driving,
            render_job_inputs_check(portrait=portrait, driving=driving) as checked,
        ):
            ids = render_job_identity_checks(
                checked=checked,
                subject=subject,
                performer=performer,
                purpose=purpose,
                territory="WW",
                acting_user=users["demo-requester"],
            )
            job = render_job_submit(
                requested_by=users["demo-requester"],
                portrait=checked.portrait,
                driving=checked.driving,
                portrait_subject=subject,
                performer=performer,
                purpose=purpose,
                channels=["web"],
                territory="WW",
                model_version=model,
                parameters=parameters,
                face_match_ids=ids,
                acting_user=users["demo-requester"],
            )
        return job, time.perf_counter() - started

    def approve(job: RenderJob) -> tuple[float, float]:
        started = time.perf_counter()
        for step in ApprovalStep.objects.filter(request_id=job.approval_request_id).order_by(
            "order"
        ):
            decider = users["demo-reviewer" if step.role == "reviewer" else "demo-compliance"]
            approval_decide(step=step, verdict="approve", acting_user=decider)
        return time.time(), time.perf_counter() - started

    def idle() -> bool:
        beat = WorkerHeartbeat.objects.filter(nodename__startswith="bench@").first()
        return beat is not None and beat.current_job_id is None

    wait(idle, 120)
    # Warm-up: the worker loads the model once.
    job, _ = submit({"num_inference_steps": 2, "seed": 0})
    approve(job)
    wait(
        lambda job=job: RenderJob.objects.get(pk=job.pk).status in {"quarantined", "published"}, 300
    )

    latencies = []
    submit_times = []
    for index in range(args.jobs):
        job, submit_s = submit({"num_inference_steps": 200, "seed": index})
        submit_times.append(submit_s)
        released_at, _ = approve(job)
        wait(lambda job=job: RenderJob.objects.get(pk=job.pk).started_at is not None, 120)
        started = RenderJob.objects.get(pk=job.pk).started_at
        latencies.append(started.timestamp() - released_at)
        render_job_cancel(job=job, reason="benchmark", acting_user=users["demo-requester"])
        wait(idle, 120)
    print(
        f"approval -> task start over {len(latencies)} jobs: "
        f"p50 {1000 * percentile(latencies, 0.5):.0f} ms, "
        f"p95 {1000 * percentile(latencies, 0.95):.0f} ms, "
        f"max {1000 * max(latencies):.0f} ms"
    )
    print(
        f"submission (content checks, face matching, records): "
        f"median {statistics.median(submit_times):.2f} s"
    )

    rows = []
    for index in range(args.full):
        job, submit_s = submit({"num_inference_steps": 8, "seed": 1000 + index})
        released_at, approve_s = approve(job)
        wait(
            lambda job=job: (
                RenderJob.objects.get(pk=job.pk).status in {"quarantined", "published", "failed"}
            ),
            600,
        )
        job = RenderJob.objects.get(pk=job.pk)
        end_to_end = time.time() - released_at
        generation = job.generation_seconds or float("nan")
        overhead = submit_s + approve_s + end_to_end - generation
        rows.append((generation, overhead, job.status))
    print(f"{'generation s':>13} {'platform s':>11} {'overhead/generation':>20}  final status")
    for generation, overhead, status in rows:
        print(f"{generation:13.2f} {overhead:11.2f} {overhead / generation:20.2f}  {status}")
    print(
        f"(at {timezone.now():%Y-%m-%d %H:%M} on {os.cpu_count()} CPUs; tiny model, 24 frames,"
        " 64 px; overhead = submission + approvals + dispatch + claim + storage + "
        "verification)"
    )


if __name__ == "__main__":
    main()
