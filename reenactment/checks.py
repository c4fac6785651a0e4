"""System checks: a face-recogniser misconfiguration fails `manage.py check` (and start-up)
with a clear message instead of the first job's identity check."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Error, register

from reenactment.engine.faces import face_backend_names


@register()
def check_face_backend(
    app_configs: Sequence[Any] | None = None, **kwargs: Any
) -> list[CheckMessage]:
    """``FACE_BACKEND`` must name a backend; insightface needs its local pack folder."""
    name = settings.FACE_BACKEND
    if name not in face_backend_names():
        return [
            Error(
                f"FACE_BACKEND {name!r} is not a face backend.",
                hint=f"Use one of: {', '.join(face_backend_names())}.",
                id="reenactment.E001",
            )
        ]
    folder = settings.FACE_MODELS_DIR
    if name == "insightface" and (folder is None or not Path(folder).is_dir()):
        where = "is not set" if folder is None else f"({folder}) is not a folder"
        return [
            Error(
                f"FACE_BACKEND is insightface but FACE_MODELS_DIR {where}.",
                hint="Point FACE_MODELS_DIR at the pack (det_10g.onnx, w600k_r50.onnx and a "
                "manifest.json of their SHA-256 hashes); nothing is ever downloaded.",
                id="reenactment.E002",
            )
        ]
    return []
