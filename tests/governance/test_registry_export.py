"""The snapshot export is exactly what the trainer reads, and a withdrawal after the export makes
the trainer refuse it."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import call_command
from django.core.management.base import CommandError

from governance.audit_codes import AuditAction
from governance.models import AuditEvent
from governance.services.datasets import (
    ClipPersonSpec,
    clip_add,
    dataset_snapshot_freeze,
    snapshot_export_id,
)
from governance.services.licences import license_withdraw
from reenactment.engine.training.manifest import (
    SnapshotWithdrawnError,
    read_manifest,
    read_verified_clip,
)
from tests.governance.registry_helpers import (
    consenting_person,
    make_dataset,
    make_licence,
)

pytestmark = pytest.mark.django_db


def npz_clip(frames: int, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    buffer = io.BytesIO()
    np.savez(buffer, frames=rng.integers(0, 255, (frames, 8, 8, 3), dtype=np.uint8))
    return buffer.getvalue()


@pytest.fixture
def steward(users):
    return users["data_steward"]


@pytest.fixture
def snapshot_world(steward, compliance, tmp_path: Path):
    dataset = make_dataset(acting_user=steward)
    licence = make_licence(acting_user=steward)
    person, _ = consenting_person(acting_user=steward, officer=compliance)
    stored = clip_add(
        dataset=dataset,
        licence=licence,
        file=SimpleUploadedFile("talk.npz", npz_clip(3, 0)),
        duration_seconds=0.12,
        fps=25.0,
        frame_count=3,
        width=8,
        height=8,
        persons=[ClipPersonSpec(person_id=person.pk)],
        acting_user=steward,
    )
    external_bytes = npz_clip(2, 1)
    external = tmp_path / "external.npz"
    external.write_bytes(external_bytes)
    clip_add(
        dataset=dataset,
        licence=licence,
        uri=external.as_uri(),
        sha256=hashlib.sha256(external_bytes).hexdigest(),
        duration_seconds=0.08,
        fps=25.0,
        frame_count=2,
        width=8,
        height=8,
        acting_user=steward,
    )
    snapshot = dataset_snapshot_freeze(dataset=dataset, name="v1", acting_user=steward)
    return snapshot, licence, person, stored


def test_the_trainer_reads_the_export_and_refuses_it_once_withdrawn(
    steward, snapshot_world, tmp_path, capsys, django_capture_on_commit_callbacks
):
    snapshot, licence, person, stored = snapshot_world
    out = tmp_path / "export"
    call_command("dataset_snapshot_export", str(snapshot.pk), str(out))
    assert f"Exported snapshot-{snapshot.pk} (2 clips)" in capsys.readouterr().out

    manifest = read_manifest(out / "manifest.jsonl")
    assert manifest.snapshot_id == snapshot_export_id(snapshot)
    assert manifest.header["snapshot_manifest_sha256"] == snapshot.manifest_sha256
    first, second = manifest.clips
    assert first.sha256 == stored.sha256 and first.frames == 3 and first.fps == 25.0
    assert first.persons == (f"person:{person.pk}",)
    assert first.licence_ids == (f"licence:{licence.pk}",)
    assert second.persons == ()
    assert read_verified_clip(first).shape == (3, 8, 8, 3)
    assert read_verified_clip(second).shape == (2, 8, 8, 3)
    status = json.loads((out / "status.json").read_text())
    assert status["snapshots"][f"snapshot-{snapshot.pk}"]["status"] == "active"
    event = AuditEvent.objects.get(action=AuditAction.DATASET_SNAPSHOT_EXPORT)
    assert event.payload["out_dir"] == str(out.resolve())

    with django_capture_on_commit_callbacks(execute=True):
        license_withdraw(license=licence, reason="Licensor ended it", acting_user=steward)

    with pytest.raises(SnapshotWithdrawnError):
        read_manifest(out / "manifest.jsonl")
    with pytest.raises(CommandError, match="withdrawn"):
        call_command("dataset_snapshot_status", f"snapshot-{snapshot.pk}")
    assert '"status": "withdrawn"' in capsys.readouterr().out
    with pytest.raises(CommandError, match="snapshot_withdrawn"):
        call_command("dataset_snapshot_export", str(snapshot.pk), str(tmp_path / "again"))
    assert not (tmp_path / "again" / "manifest.jsonl").exists()


def test_the_status_command_refreshes_a_status_file(snapshot_world, tmp_path, capsys):
    snapshot = snapshot_world[0]
    call_command("dataset_snapshot_status", str(snapshot.pk), "--write", str(tmp_path))
    document = json.loads(capsys.readouterr().out)
    assert document["snapshot_id"] == f"snapshot-{snapshot.pk}"
    assert document["status"] == "active"
    status = json.loads((tmp_path / "status.json").read_text())
    assert status["snapshots"][f"snapshot-{snapshot.pk}"]["status"] == "active"
