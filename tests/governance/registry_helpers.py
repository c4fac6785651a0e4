"""Test data of the licensed-data registry and the model registry, made through the services
(so audit rows exist as in production), and real model folders built with the engine.

Model folders: ``tiny_model_folder`` writes our safetensors layout with
``reenactment.engine.loading.build_networks`` at the tiny parity-fixture UNet configuration
(``shared/fixtures/xnemo_tiny``) and a tiny motion encoder; ``official_model_folder`` writes the
same networks as an official four-file ``.pth`` set with its configurations.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from itertools import count
from pathlib import Path
from typing import Any

import pytest
from django.utils import timezone

from governance.models import (
    ConsentRecord,
    ConsentRole,
    Dataset,
    DatasetSnapshot,
    License,
    Licensor,
    ModelVersion,
    Person,
    User,
)
from governance.services.datasets import (
    ClipPersonSpec,
    clip_add,
    dataset_create,
    dataset_snapshot_freeze,
)
from governance.services.licences import license_create, licensor_create
from governance.services.registry import model_version_register
from tests.factories import create_consent, create_person

REPO_ROOT = Path(__file__).resolve().parents[2]
SYNTHFACE_LICENCE = "CC0 1.0 (SynthFace, project-owned)"
XNEMO_LICENCE = "CC BY-NC 4.0 (ByteDance X-NeMo weights)"
ALL_USES = ["training", "evaluation", "research_output", "commercial_output"]

_numbers = count(1)


def fixtures_dir() -> Path:
    """The X-NeMo fixtures folder (as tests/engine/conftest.py finds it)."""
    override = os.environ.get("XNEMO_FIXTURES_DIR")
    candidates = (
        [Path(override)]
        if override
        else [REPO_ROOT / "shared" / "fixtures", REPO_ROOT.parent / "shared" / "fixtures"]
    )
    for candidate in candidates:
        if (candidate / "xnemo_tiny" / "unet_config.json").is_file():
            return candidate / "xnemo_tiny"
    pytest.fail(f"X-NeMo fixtures not found in {', '.join(map(str, candidates))}")


TINY_MOTION_ENCODER = {
    "extra_feat_dim": 3,
    "out_ch": 16,
    "backbone_channels": [8, 16, 32],
    "num_landmarks": 8,
    "attention_heads": 2,
    "attention_head_dim": 8,
    "attention_norm_groups": 8,
}


def _tiny_networks() -> Any:
    import torch

    from reenactment.engine.loading import build_networks
    from reenactment.engine.networks import MotionEncoder

    fixtures = fixtures_dir()
    config = json.loads((fixtures / "unet_config.json").read_text())
    kwargs = json.loads((fixtures / "unet_additional_kwargs.json").read_text())
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        networks = build_networks(config, kwargs, device="cpu")
        # The full-size motion encoder is 250 MB; its structure at toy widths is enough here.
        networks.motion_encoder = MotionEncoder(**TINY_MOTION_ENCODER)
    return networks


def tiny_model_folder(folder: Path) -> Path:
    """Our safetensors layout (``save_xnemo_model``) at the tiny configuration."""
    from reenactment.engine.loading import save_xnemo_model

    save_xnemo_model(folder, _tiny_networks())
    return folder


def official_model_folder(folder: Path) -> Path:
    """The official four-file ``.pth`` set of the tiny networks, with their configurations."""
    import torch

    from reenactment.engine.loading import split_denoising_state_dict

    networks = _tiny_networks()
    folder.mkdir(parents=True)
    torch.save(networks.reference_unet.state_dict(), folder / "xnemo_reference_unet.pth")
    denoising, temporal = split_denoising_state_dict(networks.denoising_unet.state_dict())
    torch.save(denoising, folder / "xnemo_denoising_unet.pth")
    torch.save(temporal, folder / "xnemo_temporal_module.pth")
    torch.save(networks.motion_encoder.state_dict(), folder / "xnemo_motion_encoder.pth")
    fixtures = fixtures_dir()
    shutil.copy(fixtures / "unet_config.json", folder / "unet_config.json")
    shutil.copy(fixtures / "unet_additional_kwargs.json", folder / "unet_additional_kwargs.json")
    (folder / "motion_encoder_config.json").write_text(json.dumps(TINY_MOTION_ENCODER))
    return folder


def folder_checksums(folder: Path) -> dict[str, str]:
    return {
        path.relative_to(folder).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


# --- licences, datasets, clips, snapshots -------------------------------------------------------


def seeded_licence(name: str) -> License:
    return License.objects.get(name=name)


def make_licensor(*, acting_user: User, name: str | None = None) -> Licensor:
    return licensor_create(name=name or f"Licensor {next(_numbers)}", acting_user=acting_user)


def make_licence(
    *,
    acting_user: User,
    uses: Sequence[str] = ALL_USES,
    name: str | None = None,
    territories: Sequence[str] = ("WW",),
    expires_at: datetime | None = None,
    valid_from: datetime | None = None,
    licensor: Licensor | None = None,
    attribution_text: str = "",
) -> License:
    return license_create(
        licensor=licensor or make_licensor(acting_user=acting_user),
        name=name or f"Licence {next(_numbers)}",
        allowed_uses=list(uses),
        territories=list(territories),
        valid_from=valid_from or timezone.now() - timedelta(days=30),
        expires_at=expires_at,
        terms_text="The licensee may use the clips as listed.",
        attribution_text=attribution_text,
        acting_user=acting_user,
    )


def training_consent(*, person: Person, acting_user: User, **overrides: Any) -> ConsentRecord:
    """A consent to appear in training data: both roles, model_training, internal, worldwide."""
    values: dict[str, Any] = {
        "role": ConsentRole.BOTH,
        "purposes": ["model_training"],
        "channels": ["internal"],
        "territories": ["WW"],
    }
    values.update(overrides)
    return create_consent(person=person, acting_user=acting_user, **values)


def consenting_person(*, acting_user: User, officer: User) -> tuple[Person, ConsentRecord]:
    person = create_person(acting_user=officer, full_name=f"Performer {next(_numbers)}")
    return person, training_consent(person=person, acting_user=officer)


def make_dataset(*, acting_user: User, name: str | None = None) -> Dataset:
    return dataset_create(name=name or f"Dataset {next(_numbers)}", acting_user=acting_user)


def random_sha256() -> str:
    return hashlib.sha256(f"clip {next(_numbers)}".encode()).hexdigest()


def add_uri_clip(
    *,
    dataset: Dataset,
    licence: License,
    acting_user: User,
    persons: Sequence[Person] = (),
    frames: int = 24,
) -> Any:
    return clip_add(
        dataset=dataset,
        licence=licence,
        uri=f"https://data.example.org/clips/{next(_numbers)}.mp4",
        sha256=random_sha256(),
        duration_seconds=frames / 25,
        fps=25.0,
        frame_count=frames,
        width=512,
        height=512,
        persons=[ClipPersonSpec(person_id=p.pk) for p in persons],
        acting_user=acting_user,
    )


def make_snapshot(
    *,
    acting_user: User,
    officer: User,
    licence: License | None = None,
    dataset: Dataset | None = None,
    with_person: bool = True,
) -> DatasetSnapshot:
    """A dataset with one eligible clip (a consenting performer when ``with_person``), frozen."""
    dataset = dataset or make_dataset(acting_user=acting_user)
    licence = licence or make_licence(acting_user=acting_user)
    persons = (
        [consenting_person(acting_user=acting_user, officer=officer)[0]] if with_person else []
    )
    add_uri_clip(dataset=dataset, licence=licence, acting_user=acting_user, persons=persons)
    return dataset_snapshot_freeze(
        dataset=dataset, name=f"snapshot {next(_numbers)}", acting_user=acting_user
    )


def register(
    *,
    folder: Path,
    licence: License,
    acting_user: User,
    snapshots: Sequence[DatasetSnapshot] = (),
    parent: ModelVersion | None = None,
    name: str = "xnemo",
    version: str | None = None,
) -> ModelVersion:
    return model_version_register(
        name=name,
        version=version or f"1.{next(_numbers)}",
        folder=folder,
        licence=licence,
        snapshots=snapshots,
        parent=parent,
        acting_user=acting_user,
    )


_shared_model: dict[str, Path] = {}


def shared_tiny_model_dir(factory: pytest.TempPathFactory | None = None) -> Path:
    """One tiny model folder (our layout) for the whole session, built on first use; copy it
    before changing it."""
    if "tiny" not in _shared_model:
        base = factory.mktemp("models") if factory else Path(tempfile.mkdtemp(prefix="models"))
        _shared_model["tiny"] = tiny_model_folder(base / "tiny")
    return _shared_model["tiny"]


# --- the permission matrix's registry endpoints ---------------------------------------------

BodyFactory = Callable[[], tuple[dict[str, object], str]]


def registry_endpoint(
    users: Mapping[str, User], endpoint: str
) -> tuple[dict[str, int], BodyFactory | None]:
    """The ids a registry endpoint of ``test_permissions_matrix`` needs in its path, made
    through the services only when it needs them, and its request body (POST)."""
    if not any(
        endpoint.partition(" ")[2].startswith(prefix)
        for prefix in ("licensors", "licences", "datasets", "clips", "snapshots", "models")
    ):
        return {}, None
    steward = users["data_steward"]
    ids: dict[str, int] = {}
    method, _, template = endpoint.partition(" ")
    # Only what the endpoint needs: a list needs nothing, an object its row and the rows
    # above it.
    if method == "GET" and "{" not in template:
        return ids, None
    licence = make_licence(acting_user=steward)
    ids["licence"] = licence.pk
    if any(key in endpoint for key in ("dataset", "clip", "snapshot", "model")):
        dataset = make_dataset(acting_user=steward)
        clip = add_uri_clip(dataset=dataset, licence=licence, acting_user=steward)
        ids.update(dataset=dataset.pk, clip=clip.pk)
    if "snapshot" in template or "model" in template:
        snapshot = dataset_snapshot_freeze(dataset=dataset, name="v1", acting_user=steward)
        ids["snapshot"] = snapshot.pk
    if "{model}" in endpoint:
        ids["model"] = register(
            folder=shared_tiny_model_dir(),
            licence=licence,
            snapshots=[snapshot],
            acting_user=steward,
        ).pk
    bodies: dict[str, BodyFactory] = {
        "POST licensors/create": lambda: ({"name": "New licensor"}, "json"),
        "POST licences/create": lambda: (
            {
                "licensor": licence.licensor_id,
                "name": "New licence",
                "allowed_uses": ["training", "evaluation"],
                "territories": ["WW"],
                "terms_text": "Terms.",
            },
            "json",
        ),
        "POST datasets/create": lambda: ({"name": "New dataset"}, "json"),
        "POST clips/create": lambda: (
            {
                "dataset": ids["dataset"],
                "licence": licence.pk,
                "uri": "https://data.example.org/new.mp4",
                "sha256": random_sha256(),
                "duration_seconds": 1.0,
                "fps": 25,
                "frame_count": 25,
                "width": 512,
                "height": 512,
            },
            "json",
        ),
        "POST snapshots/create": lambda: ({"dataset": ids["dataset"], "name": "v2"}, "json"),
        "POST licences/{licence}/withdraw": lambda: ({"reason": "Ended"}, "json"),
        "POST models/{model}/block": lambda: ({"reason": "Review"}, "json"),
        "POST models/{model}/deprecate": lambda: ({"reason": "Old"}, "json"),
    }
    return ids, bodies.get(endpoint)
