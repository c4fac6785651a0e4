"""Scratch folders of job work: private, removed at the end, and swept when their process died."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings

from reenactment.scratch import scratch_folder, scratch_host_dir, scratch_sweep


def dead_pid() -> int:
    """The id of a process that has exited and been reaped."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_a_folder_lives_under_this_hosts_scratch_and_goes_when_the_block_ends() -> None:
    with pytest.raises(RuntimeError), scratch_folder("job", job_id=12) as folder:
        assert folder.parent == Path(settings.SCRATCH_DIR) / socket.gethostname()
        assert folder.name.startswith(f"job-12.pid{os.getpid()}.")
        (folder / "output.mp4").write_bytes(b"x" * 1024)
        raise RuntimeError("the work failed")
    assert not folder.exists()
    with scratch_folder("inputs") as upload:
        assert upload.name.startswith(f"inputs-new.pid{os.getpid()}.")
    assert not upload.exists()


def test_the_sweep_removes_only_folders_of_this_hosts_ended_processes() -> None:
    here = scratch_host_dir()
    gone = here / f"job-3.pid{dead_pid()}.abc123"
    (gone / "nested").mkdir(parents=True)
    (gone / "nested" / "portrait.png").write_bytes(b"png")
    alive = here / f"verify-3.pid{os.getppid()}.def456"
    alive.mkdir()
    unrelated = here / "operator-notes"
    unrelated.mkdir()
    stray_file = here / f"job-4.pid{dead_pid()}.file"
    stray_file.write_text("not a folder")
    elsewhere = Path(settings.SCRATCH_DIR) / "another-host" / f"job-5.pid{dead_pid()}.ghi789"
    elsewhere.mkdir(parents=True)

    assert scratch_sweep() == [gone]
    assert not gone.exists()
    assert alive.is_dir() and unrelated.is_dir() and stray_file.is_file() and elsewhere.is_dir()
    assert scratch_sweep() == []


def test_making_a_folder_sweeps_first() -> None:
    left = scratch_host_dir() / f"job-7.pid{dead_pid()}.zzz999"
    left.mkdir()
    with scratch_folder("job", job_id=7) as folder:
        assert not left.exists()
        assert [path.name for path in scratch_host_dir().iterdir()] == [folder.name]


@pytest.mark.parametrize("kind", ["", "Job", "job-1", "../x"])
def test_a_kind_is_lower_case_letters(kind: str) -> None:
    with pytest.raises(ValueError, match="lower-case letters"), scratch_folder(kind):
        pass
