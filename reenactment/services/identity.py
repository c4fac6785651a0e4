"""Consent bound to faces at submission: the portrait must be the portrait subject, and the
driving video's performer the consenting performer.

Scores are computed here with the engine (``reenactment.engine.identity``) before the job
exists; governance (``face_match_evaluate``) judges them, stores scores and the backend's
fingerprint (never embeddings) and audits the outcome. A mismatch is recorded and audited in
its own transaction and refuses the submission (422), so the refusal is on the record even
though no job is created.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from governance.models import Person, Purpose
from governance.selectors.identity import face_backend_assert_usable
from governance.services.identity import face_match_evaluate
from reenactment.engine import faces
from reenactment.engine.identity import identity_match, sample_video_frames
from reenactment.services.inputs import CheckedInputs

SUBMISSION_SUBJECT = "reenactment.submission"


def _reference_image(person: Person) -> Any:
    with person.reference_photo.file.open("rb") as handle:
        return faces.load_rgb(handle.read())


def _driving_samples(checked: CheckedInputs, count: int) -> list[Any]:
    total = int(checked.driving.info.get("frames") or 0) or None
    return sample_video_frames(checked.driving.path, count=count, total=total)


def face_backend_options() -> dict[str, Any]:
    """The constructor options of the configured ``FACE_BACKEND``; ``ImproperlyConfigured``
    when it names no backend, or is insightface without its pack folder. The one place that
    knows what each backend needs: the loader and the start-up check both ask it."""
    name = settings.FACE_BACKEND
    if name not in faces.face_backend_names():
        raise ImproperlyConfigured(
            f"FACE_BACKEND {name!r} is not a face backend; use one of: "
            f"{', '.join(faces.face_backend_names())}."
        )
    if name != "insightface":
        return {}
    folder = settings.FACE_MODELS_DIR
    if folder is None or not Path(folder).is_dir():
        where = "is not set" if folder is None else f"({folder}) is not a folder"
        raise ImproperlyConfigured(
            f"FACE_BACKEND is insightface but FACE_MODELS_DIR {where}: point it at the pack "
            "(det_10g.onnx, w600k_r50.onnx and a manifest.json of their SHA-256 hashes); "
            "nothing is ever downloaded."
        )
    return {"model_dir": Path(folder)}


def face_backend_load() -> faces.FaceBackend:
    """The platform's face recogniser (``FACE_BACKEND``), loaded once per process: dlib from
    its bundled CC0 models, insightface from the pinned pack in ``FACE_MODELS_DIR`` (its
    ``manifest.json`` hashes are checked; nothing is downloaded)."""
    return faces.get_face_backend(settings.FACE_BACKEND, **face_backend_options())


def render_job_identity_checks(
    *,
    checked: CheckedInputs,
    subject: Person,
    performer: Person,
    purpose: Purpose,
    territory: str,
    acting_user: Any,
) -> list[int]:
    """Run both face checks; ids of the FaceMatchRecords, or FaceMismatchError (422).

    The recogniser's licence must cover the job's purpose before any face is compared
    (``face_backend_assert_usable``, 409): insightface's packs, say, never process faces for a
    commercial job."""
    face_backend_assert_usable(backend=settings.FACE_BACKEND, purpose=purpose, territory=territory)
    backend = face_backend_load()
    submission = f"{checked.portrait.sha256[:24]}-{checked.driving.sha256[:24]}"
    records = []
    for person, check, candidates in (
        (subject, "portrait_vs_subject", [checked.portrait_image]),
        (
            performer,
            "driving_vs_performer",
            _driving_samples(checked, settings.RENDER_DRIVING_FACE_SAMPLES),
        ),
    ):
        scores = identity_match(_reference_image(person), candidates, backend)
        record = face_match_evaluate(
            subject_type=SUBMISSION_SUBJECT,
            subject_id=submission,
            person=person,
            check=check,
            scores=scores.to_dict(),
            backend_info=backend.info.to_dict(),
            acting_user=acting_user,
            candidate_sha256=(
                checked.portrait.sha256
                if check == "portrait_vs_subject"
                else checked.driving.sha256
            ),
        )
        records.append(record.pk)
    return records
