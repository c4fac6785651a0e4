"""Fixtures shared by the whole suite: a real Celery worker process on the real broker."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.db import connection

from config.celery_app import app as celery_app

REPO_ROOT = Path(__file__).resolve().parent.parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """GPU tests run only with RUN_GPU=1 on a machine with CUDA."""
    if os.environ.get("RUN_GPU") == "1":
        return
    skip = pytest.mark.skip(reason="needs a GPU: set RUN_GPU=1 on a CUDA machine")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


# The audit trigger refuses TRUNCATE unless this is on (governance migration 0005). Django flushes
# the test database with TRUNCATE after every transactional test, so the test database allows
# it; tests/governance/test_audit.py proves the trigger still refuses when it is off, as in
# production, where nothing ever sets it.
AUDIT_TRUNCATE_SETTING = "governance.audit_truncate_allowed"


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup: None, django_db_blocker: Any) -> Iterator[None]:
    with django_db_blocker.unblock():
        name = connection.settings_dict["NAME"]
        with connection.cursor() as cursor:
            cursor.execute(f"ALTER DATABASE \"{name}\" SET {AUDIT_TRUNCATE_SETTING} = 'on'")
        connection.close()  # new connections pick the setting up
    yield


@pytest.fixture(autouse=True)
def media_root(settings: Any, tmp_path: Path) -> Path:
    """Every test stores files (and job scratch folders) in its own temporary folder, never
    under var/."""
    settings.MEDIA_ROOT = str(tmp_path / "media")
    settings.SCRATCH_DIR = str(tmp_path / "scratch")
    return tmp_path / "media"


@dataclass
class WorkerProcess:
    """A Celery worker started as a separate OS process, as in production."""

    process: subprocess.Popen[bytes]
    nodename: str
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout: float = 30) -> None:
        if self.alive():
            self.process.terminate()
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _worker_env() -> dict[str, str]:
    db = connection.settings_dict
    # The worker must see the same (test) database the test process uses.
    url = f"postgres://{db['USER']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings.test",
        "DATABASE_URL": url,
        "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
        "SCRATCH_DIR": str(settings.SCRATCH_DIR),  # the test's own (the media_root fixture)
        "PYTHONUNBUFFERED": "1",
    }


def _die_with_parent() -> None:
    """Runs in the worker child before exec: SIGTERM it when the test process dies, so an
    interrupted test run never leaves a worker consuming the shared test queues."""
    import ctypes
    import signal

    PR_SET_PDEATHSIG = 1
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def start_worker(
    tmp_path: Path,
    *,
    queues: str = "default,gpu",
    concurrency: int = 1,
    name: str = "w",
    env: dict[str, str] | None = None,
) -> WorkerProcess:
    nodename = f"{name}-{uuid.uuid4().hex[:8]}@test"
    log_path = tmp_path / f"{nodename.split('@')[0]}.log"
    command = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "config",
        "worker",
        "-Q",
        queues,
        "--concurrency",
        str(concurrency),
        "-n",
        nodename,
        "--loglevel",
        "INFO",
        "--without-gossip",
        "--without-mingle",
    ]
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command,
            cwd=REPO_ROOT,
            env={**_worker_env(), **(env or {})},
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent,
        )
    worker = WorkerProcess(process, nodename, log_path)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if not worker.alive():
            raise RuntimeError(f"worker exited during start-up:\n{worker.log()}")
        if celery_app.control.ping(destination=[nodename], timeout=1.0):
            return worker
    worker.stop()
    raise RuntimeError(f"worker {nodename} did not answer a ping within 90 s:\n{worker.log()}")


@pytest.fixture
def celery_worker_process(
    django_db_setup: None, django_db_blocker: object, tmp_path: Path
) -> Iterator[WorkerProcess]:
    """One real worker process consuming both queues of the test broker."""
    # Messages left by an earlier, interrupted run must not reach this test's worker.
    with celery_app.connection_for_write() as conn:
        for queue in ("default", "gpu"):
            conn.default_channel.queue_purge(queue)
    worker = start_worker(tmp_path)
    try:
        yield worker
    finally:
        worker.stop()
