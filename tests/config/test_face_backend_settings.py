"""The platform's face-recogniser settings: ``FACE_BACKEND`` must name a backend, insightface
loads from ``FACE_MODELS_DIR`` only (checked at start-up by a system check), and the loader the
job services share passes the folder on."""

from __future__ import annotations

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from django.core.management.base import SystemCheckError

from reenactment.checks import check_face_backend
from reenactment.engine import faces
from reenactment.services.identity import face_backend_load


def check_ids() -> list[str]:
    return [message.id for message in check_face_backend()]


def test_the_default_dlib_backend_passes_the_check_and_loads(settings):
    settings.FACE_BACKEND = "dlib"
    assert check_ids() == []
    assert face_backend_load().info.name == "dlib"


def test_an_unknown_backend_stops_manage_check(settings):
    settings.FACE_BACKEND = "insightfase"
    assert check_ids() == ["reenactment.E001"]
    with pytest.raises(ImproperlyConfigured, match="use one of: dlib, insightface"):
        face_backend_load()
    with pytest.raises(SystemCheckError, match="'insightfase' is not a face backend"):
        call_command("check")


def test_insightface_needs_its_local_pack_folder(settings, tmp_path):
    settings.FACE_BACKEND = "insightface"
    settings.FACE_MODELS_DIR = None
    assert check_ids() == ["reenactment.E001"]
    with pytest.raises(ImproperlyConfigured, match="FACE_MODELS_DIR is not set"):
        face_backend_load()
    settings.FACE_MODELS_DIR = tmp_path / "missing"
    [message] = check_face_backend()
    assert "is not a folder" in message.msg
    with pytest.raises(ImproperlyConfigured, match="is not a folder"):
        face_backend_load()

    # A folder is passed to the backend, which refuses weights that are not hash-pinned.
    settings.FACE_MODELS_DIR = tmp_path
    assert check_ids() == []
    with pytest.raises(faces.FaceModelError, match=f"model folder {tmp_path} has no manifest"):
        face_backend_load()
