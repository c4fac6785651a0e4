"""`demo_jobs_seed` registers the committed SynthFace preview model with matching demo media."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command

from governance.models import ModelVersion, Person
from reenactment import runtime
from reenactment.engine.faces import face_similarity, find_single_face, get_face_backend, load_rgb
from reenactment.engine.video_io import iter_frames
from reenactment.management.commands.demo_jobs_seed import (
    PREVIEW_MODEL_NAME,
    PREVIEW_MODEL_VERSION,
    SYNTHFACE_PERFORMER,
    SYNTHFACE_PORTRAIT_SUBJECT,
)

pytestmark = pytest.mark.django_db


def test_demo_jobs_seed_registers_the_preview_model_and_synthface_characters(
    settings: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings.VAR_DIR = tmp_path / "var"
    settings.MODELS_DIR = tmp_path / "models"
    call_command("demo_seed")
    call_command("demo_jobs_seed")
    out = capsys.readouterr().out
    model = ModelVersion.objects.get(name=PREVIEW_MODEL_NAME)
    assert f"#{model.pk} {PREVIEW_MODEL_NAME} {PREVIEW_MODEL_VERSION}" in out
    assert "(demonstration model)" not in out
    assert not model.is_demonstration
    # The worker generates at the preview model's training resolution by default.
    assert runtime.generation_defaults(model)["resolution"] == 64

    backend = get_face_backend("dlib")
    demo = settings.VAR_DIR / "demo"
    portrait = load_rgb(demo / "portrait.png")
    find_single_face(portrait, backend)
    subject = Person.objects.get(full_name=SYNTHFACE_PORTRAIT_SUBJECT)
    performer = Person.objects.get(full_name=SYNTHFACE_PERFORMER)
    with subject.reference_photo.file.open("rb") as f:
        subject_photo = load_rgb(f.read())
    with performer.reference_photo.file.open("rb") as f:
        performer_photo = load_rgb(f.read())
    frames = list(iter_frames(demo / "driving.mp4"))
    assert len(frames) == 48
    # The driving clip shows the performer, not the portrait subject.
    driver = frames[len(frames) // 2]
    assert face_similarity(driver, performer_photo, backend) > face_similarity(
        driver, subject_photo, backend
    )

    # A torn file from an interrupted earlier run (or another model's media) is replaced.
    (demo / "driving.mp4").write_bytes(b"not a video")
    call_command("demo_jobs_seed")  # idempotent
    assert len(list(iter_frames(demo / "driving.mp4"))) == 48
    assert sorted(p.name for p in demo.iterdir()) == ["driving.mp4", "portrait.png"]
    assert ModelVersion.objects.filter(name=PREVIEW_MODEL_NAME).count() == 1
    names = [subject.full_name, performer.full_name]
    assert Person.objects.filter(full_name__in=names).count() == 2
