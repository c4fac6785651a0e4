"""Demo data for render jobs: two consenting persons, a registered model, sample inputs.

Run by `make run` after `demo_seed`. Idempotent. Everything goes through the audited services,
as in production. The sample media follow the registered model:

* the committed SynthFace preview model (``reenactment/engine/preview_model/``, used when
  present): two SynthFace characters, a portrait subject and a performer whose driving clip has
  him talk and move his head - the only faces that model has learnt to animate;
* otherwise the seeded tiny demonstration network, with scikit-image's sample photographs (the
  astronaut as the portrait subject, the cameraman as the performer, his photo moved slightly).

The driving clip (with a tone as its audio track) and the portrait are written under var/demo/.
"""

from __future__ import annotations

import io
import os
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
from django.conf import settings
from django.core.files.base import ContentFile
from django.core.management.base import BaseCommand
from django.utils import timezone
from PIL import Image

from governance.models import License, ModelVersion, Person, Purpose, User
from reenactment.engine import demo_media

DEMO_MODEL_NAME = "demo-tiny"
PREVIEW_MODEL_NAME = "synthface-preview"
#: The committed preview model's version (its card's title). Registrations are hash-pinned to the
#: folder's files, so new weights need a new version; an older registration stays on record.
PREVIEW_MODEL_VERSION = "9"
SYNTHFACE_LICENCE = "CC0 1.0 (SynthFace, project-owned)"
PORTRAIT_SUBJECT = "Demo Portrait Subject (astronaut photo)"
PERFORMER = "Demo Performer (cameraman photo)"
SYNTHFACE_PORTRAIT_SUBJECT = "Demo Portrait Subject (SynthFace character A)"
SYNTHFACE_PERFORMER = "Demo Performer (SynthFace character B)"


def preview_model_folder() -> Path:
    """Where the committed SynthFace preview model lives (it may be absent in a fork)."""
    return Path(settings.BASE_DIR) / "reenactment" / "engine" / "preview_model"


def demo_inputs(*, synthface: bool) -> tuple[str, np.ndarray, str, np.ndarray, list[np.ndarray]]:
    """``(subject name, portrait, performer name, performer photo, driving frames)``."""
    if synthface:
        return (
            SYNTHFACE_PORTRAIT_SUBJECT,
            demo_media.synthface_demo_portrait(),
            SYNTHFACE_PERFORMER,
            demo_media.synthface_demo_performer_face(),
            demo_media.synthface_demo_driving_frames(),
        )
    return (
        PORTRAIT_SUBJECT,
        demo_media.demo_portrait(),
        PERFORMER,
        demo_media.demo_performer_face(),
        demo_media.demo_driving_frames(),
    )


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def _consent_form_pdf(name: str) -> bytes:
    """A one-page PDF standing in for a signed consent form (demo data only)."""
    text = f"Consent form (demo): {name}".replace("(", "[").replace(")", "]")
    stream = f"BT /F1 14 Tf 72 720 Td ({text}) Tj ET".encode()
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = io.BytesIO()
    out.write(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(out.tell())
        out.write(b"%d 0 obj\n" % number + body + b"\nendobj\n")
    xref = out.tell()
    out.write(b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1))
    for offset in offsets:
        out.write(b"%010d 00000 n \n" % offset)
    out.write(
        b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    )
    return out.getvalue()


class Command(BaseCommand):
    help = (
        "Create the render-job demo: two consenting persons (portrait subject and performer, "
        "consent for every active purpose on the internal and web channels, worldwide, one "
        "year), a registered model (the committed SynthFace preview model when present, "
        "otherwise a seeded tiny demonstration model whose output is not meaningful) and "
        "sample inputs under var/demo/. Idempotent."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        from reenactment.engine.video_io import make_test_clip

        actor = User.objects.filter(username="demo-compliance").first()
        if actor is None:
            self.stderr.write("Run `python manage.py demo_seed` first (demo users).")
            raise SystemExit(2)
        model = self._model(User.objects.filter(username="demo-steward").first() or actor)
        subject_name, portrait, performer_name, performer_face, driving = demo_inputs(
            synthface=not model.is_demonstration
        )
        demo_dir = Path(settings.VAR_DIR) / "demo"
        demo_dir.mkdir(parents=True, exist_ok=True)
        # Written every time (they are deterministic), each through a temporary name: the files
        # always match the registered model's media, and an interrupted run leaves no torn file.
        portrait_path = demo_dir / "portrait.png"
        driving_path = demo_dir / "driving.mp4"
        partial = portrait_path.with_name("portrait.partial.png")
        partial.write_bytes(_png(portrait))
        os.replace(partial, portrait_path)
        partial = driving_path.with_name("driving.partial.mp4")
        make_test_clip(partial, driving, 24, audio_tone_hz=440.0)
        os.replace(partial, driving_path)

        subject = self._person(subject_name, _png(portrait), "portrait_subject", actor)
        performer = self._person(performer_name, _png(performer_face), "driving_performer", actor)
        self.stdout.write("Render-job demo:")
        self.stdout.write(f"  portrait subject: person #{subject.pk}  ({portrait_path})")
        self.stdout.write(f"  performer:        person #{performer.pk}  ({driving_path})")
        self.stdout.write(
            f"  model version:    #{model.pk} {model.name} {model.version}"
            + (" (demonstration model)" if model.is_demonstration else "")
        )

    def _person(self, name: str, photo: bytes, role: str, actor: User) -> Person:
        from governance.services.consents import consent_record_create
        from governance.services.persons import person_create

        person = Person.objects.filter(full_name=name).first()
        if person is not None:
            return person
        person = person_create(
            full_name=name,
            reference_photo=ContentFile(photo, name="reference.png"),
            identity_verification_note="Demo data: sample image, no real person enrolled.",
            acting_user=actor,
        )
        purposes = list(Purpose.objects.filter(is_active=True).values_list("pk", flat=True))
        consent_record_create(
            person=person,
            role=role,
            purposes=purposes,
            channels=["internal", "web"],
            territories=["WW"],
            commercial_use=True,
            valid_from=timezone.now() - timedelta(minutes=5),
            valid_until=timezone.now() + timedelta(days=365),
            signed_form=ContentFile(_consent_form_pdf(name), name="consent.pdf"),
            notes="Demo consent.",
            acting_user=actor,
        )
        return person

    def _model(self, actor: User) -> ModelVersion:
        from governance.services.registry import model_version_register
        from reenactment.engine import demo_model

        preview = preview_model_folder()
        if (preview / "model_index.json").exists():
            name, version, folder, demo = PREVIEW_MODEL_NAME, PREVIEW_MODEL_VERSION, preview, False
        else:
            folder = Path(settings.MODELS_DIR) / DEMO_MODEL_NAME
            name, version, demo = DEMO_MODEL_NAME, "1", True
            demo_model.build_tiny_model(folder, seed=0)
        existing = ModelVersion.objects.filter(name=name, version=version).first()
        if existing is not None:
            return existing
        return model_version_register(
            name=name,
            version=version,
            folder=folder,
            licence=License.objects.get(name=SYNTHFACE_LICENCE),
            is_demonstration=demo,
            description=(
                "Seeded tiny demonstration network: its output is not meaningful."
                if demo
                else "Small X-NeMo trained on SynthFace (CC0); see its model card."
            ),
            acting_user=actor,
        )
