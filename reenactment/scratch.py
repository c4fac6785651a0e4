"""Scratch folders for one piece of job work, that outlive no process.

An attempt at a job copies its inputs and writes its output in a folder of its own and removes
it when it ends. A process killed outright (SIGKILL, the kernel's OOM killer, a lost machine)
removes nothing, so without a sweep every such kill would leave a video-sized folder behind
for ever. The folders therefore live under ``<SCRATCH_DIR>/<host>/`` (``SCRATCH_DIR`` is per
deployment: ``var/scratch`` by default, never the shared system temp folder) and carry the
process id that made them, ``<kind>-<job>.pid<pid>.<random>``. Whenever a process makes one,
and when a worker starts, the folders of this host's processes that no longer exist are
removed: never a running process's folder (a redelivered job's second attempt may run while a
stalled first one is still alive), never another host's (a scratch folder on shared storage).
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import socket
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from django.conf import settings

logger = logging.getLogger(__name__)

_KIND = re.compile(r"[a-z]+")
_OWNER = re.compile(r"^[a-z]+-[a-z0-9]+\.pid(?P<pid>[0-9]+)\.")


def scratch_host_dir() -> Path:
    """This host's share of ``SCRATCH_DIR`` (created if missing)."""
    # A host name never holds "/" in practice; keep it to one path segment regardless.
    host = socket.gethostname().replace(os.sep, "_") or "localhost"
    folder = Path(settings.SCRATCH_DIR) / host
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: alive
    return True


def scratch_sweep() -> list[Path]:
    """Remove this host's scratch folders whose process is gone; returns what was removed."""
    removed = []
    for entry in sorted(scratch_host_dir().iterdir()):
        owner = _OWNER.match(entry.name)
        if owner is None or not entry.is_dir() or _process_exists(int(owner["pid"])):
            continue
        shutil.rmtree(entry, ignore_errors=True)
        if not entry.exists():
            removed.append(entry)
    if removed:
        logger.info(
            "removed %d scratch folder(s) of processes that ended without cleaning up: %s",
            len(removed),
            ", ".join(path.name for path in removed),
        )
    return removed


@contextmanager
def scratch_folder(kind: str, *, job_id: int | None = None) -> Iterator[Path]:
    """A private folder for one piece of work on ``job_id``, removed when the block ends.

    Args:
        kind: What the folder is for, lower-case letters (``"job"``, ``"verify"``, ...).
        job_id: The job, when there is one yet (a submission's inputs have none).
    """
    if not _KIND.fullmatch(kind):
        raise ValueError(f"scratch folder kind must be lower-case letters, got {kind!r}")
    scratch_sweep()
    job = "new" if job_id is None else str(int(job_id))
    folder = Path(
        tempfile.mkdtemp(prefix=f"{kind}-{job}.pid{os.getpid()}.", dir=scratch_host_dir())
    )
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


__all__ = ["scratch_folder", "scratch_host_dir", "scratch_sweep"]
