"""System checks: a face-recogniser misconfiguration fails `manage.py check` (and start-up)
with a clear message instead of the first job's identity check."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.core.checks import CheckMessage, Error, register
from django.core.exceptions import ImproperlyConfigured


@register()
def check_face_backend(
    app_configs: Sequence[Any] | None = None, **kwargs: Any
) -> list[CheckMessage]:
    """``FACE_BACKEND`` must name a backend and have what it loads from (the loader's rule)."""
    from reenactment.services.identity import face_backend_options

    try:
        face_backend_options()
    except ImproperlyConfigured as exc:
        return [Error(str(exc), id="reenactment.E001")]
    return []
