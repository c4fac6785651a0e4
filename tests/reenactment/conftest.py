"""A small platform for render-job tests: users per role, two consenting persons with real
photos, an approval policy, a registered tiny model, a dev signer, and worker processes that
see the same database, media folder, models folder and signer as the test."""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from django.core.files.base import ContentFile
from PIL import Image
from skimage import data

from governance import signing
from governance.integrations.dev_ca import generate_dev_ca
from governance.models import License, ModelVersion, Person, Purpose, User
from governance.roles import Role
from governance.services.registry import model_version_register
from reenactment.engine.demo_media import demo_driving_frames, demo_performer_face
from reenactment.engine.demo_model import build_tiny_model
from reenactment.engine.video_io import make_test_clip
from reenactment.management.commands.demo_jobs_seed import SYNTHFACE_LICENCE
from tests.conftest import WorkerProcess, start_worker
from tests.factories import UserFactory, create_consent, create_person, create_policy

PURPOSE = "research"


def png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="session")
def tiny_model_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("models") / "demo-tiny", seed=0)


@pytest.fixture(scope="session")
def driving_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The performer's face with small head motion and a tone: 24 frames at 24 fps."""
    path = tmp_path_factory.mktemp("clips") / "driving.mp4"
    return make_test_clip(path, demo_driving_frames(24), 24, audio_tone_hz=440.0)


@dataclass
class Platform:
    users: dict[str, User]
    subject: Person
    performer: Person
    model: ModelVersion
    purpose: Purpose
    driving: Path
    portrait_png: bytes
    env: dict[str, str]
    tmp: Path
    workers: list[WorkerProcess] = field(default_factory=list)

    def user(self, role: Role) -> User:
        return self.users[role.value]

    def worker(self, **options: Any) -> WorkerProcess:
        worker = start_worker(self.tmp, env=self.env, **options)
        self.workers.append(worker)
        return worker


@pytest.fixture
def platform(
    transactional_db: None,
    tmp_path: Path,
    settings: Any,
    media_root: Path,
    tiny_model_folder: Path,
    driving_clip: Path,
) -> Iterator[Platform]:
    ca = generate_dev_ca(tmp_path / "ca")
    settings.C2PA_SIGNER_CHAIN = ca.chain
    settings.C2PA_SIGNER_KEY = ca.key
    settings.C2PA_TRUST_ANCHORS = ca.root
    settings.MODELS_DIR = tiny_model_folder.parent
    signing._material.cache_clear()

    users = {role.value: UserFactory(username=f"the-{role.value}", roles=[role]) for role in Role}
    compliance = users[Role.COMPLIANCE_OFFICER.value]
    create_policy(purpose=PURPOSE, acting_user=compliance)
    consent = {
        "purposes": [PURPOSE],
        "channels": ["internal", "web"],
        "territories": ["WW"],
        "commercial_use": False,
    }
    subject = create_person(
        full_name="Portrait Subject",
        reference_photo=ContentFile(png(data.astronaut()), name="ref.png"),
        acting_user=compliance,
    )
    create_consent(person=subject, role="portrait_subject", acting_user=compliance, **consent)
    performer = create_person(
        full_name="Performer",
        reference_photo=ContentFile(png(demo_performer_face()), name="ref.png"),
        acting_user=compliance,
    )
    create_consent(person=performer, role="driving_performer", acting_user=compliance, **consent)
    model = model_version_register(
        name="demo-tiny",
        version="1",
        folder=tiny_model_folder,
        licence=License.objects.get(name=SYNTHFACE_LICENCE),
        is_demonstration=True,
        acting_user=users[Role.DATA_STEWARD.value],
    )
    env = {
        "MEDIA_ROOT": str(media_root),
        "MODELS_DIR": str(tiny_model_folder.parent),
        "C2PA_SIGNER_CHAIN": str(ca.chain),
        "C2PA_SIGNER_KEY": str(ca.key),
        "C2PA_TRUST_ANCHORS": str(ca.root),
        "OMP_NUM_THREADS": "1",
    }
    world = Platform(
        users=users,
        subject=subject,
        performer=performer,
        model=model,
        purpose=Purpose.objects.get(pk=PURPOSE),
        driving=driving_clip,
        portrait_png=png(data.astronaut()),
        env=env,
        tmp=tmp_path,
    )
    try:
        yield world
    finally:
        for worker in world.workers:
            worker.stop()
