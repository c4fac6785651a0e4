"""The reproducibility manifest and the comparison of a re-run with the original job."""

from __future__ import annotations

import shutil
from pathlib import Path

import av
import numpy as np
import pytest
from django.core.exceptions import ValidationError

from governance.models import ModelVersion
from governance.reproducibility import (
    code_version_current,
    reproducibility_compare,
    reproducibility_manifest_build,
    reproducibility_manifest_sha256,
    reproducibility_manifest_validate,
)
from tests.governance.registry_helpers import (
    SYNTHFACE_LICENCE,
    register,
    seeded_licence,
    shared_tiny_model_dir,
)

pytestmark = pytest.mark.django_db

INPUTS = {"portrait": "a" * 64, "driving_video": "b" * 64}
PARAMETERS = {"num_inference_steps": 2, "guidance_scale": 2.5, "width": 64, "height": 64}


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    return shared_tiny_model_dir(tmp_path_factory)


@pytest.fixture
def model(users, tiny_model_dir) -> ModelVersion:
    return register(
        folder=tiny_model_dir,
        licence=seeded_licence(SYNTHFACE_LICENCE),
        acting_user=users["data_steward"],
    )


def write_video(path: Path, frames: list[np.ndarray]) -> Path:
    """Lossless FFV1 in Matroska, so pixel differences survive encoding exactly."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("ffv1", rate=25)
        stream.width, stream.height = frames[0].shape[1], frames[0].shape[0]
        stream.pix_fmt = "bgr0"
        for array in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(array, format="rgb24")))
        container.mux(stream.encode())
    return path


def test_a_manifest_pins_model_code_seeds_parameters_and_inputs(model):
    manifest = reproducibility_manifest_build(
        model_version=model,
        seeds={"seed": 7, "offset_seed": 11},
        parameters=PARAMETERS,
        inputs=INPUTS,
        runtime={"device": "cpu", "torch": "2.13.0"},
    )
    assert manifest["model"]["weights_sha256"] == model.weights_sha256
    assert manifest["model"]["files"] == dict(
        model.weight_files.values_list("relative_path", "sha256")
    )
    assert manifest["code_version"] == code_version_current()
    assert manifest["seeds"] == {"seed": 7, "offset_seed": 11}
    assert len(reproducibility_manifest_sha256(manifest)) == 64
    with pytest.raises(ValidationError) as info:
        reproducibility_manifest_validate({**manifest, "seeds": {}, "inputs": {"x": "nope"}})
    assert set(info.value.message_dict) == {"seeds", "inputs"}
    # As the jobs side calls it: the seeds come from the engine's parameters.
    derived = reproducibility_manifest_build(
        model_version=model,
        parameters={**PARAMETERS, "seed": 3, "offset_seed": 4, "use_seed": True},
        inputs=INPUTS,
        device="cpu",
    )
    assert derived["seeds"] == {"seed": 3, "offset_seed": 4}
    assert derived["runtime"]["device"] == "cpu" and derived["runtime"]["torch"]
    with pytest.raises(ValidationError):
        reproducibility_manifest_build(model_version=model, parameters=PARAMETERS, inputs=INPUTS)


def test_compare_reports_identical_reruns_and_names_what_differs(model, tmp_path):
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 255, (32, 32, 3), dtype=np.uint8) for _ in range(4)]
    original = write_video(tmp_path / "a.mkv", frames)
    rerun = Path(shutil.copy(original, tmp_path / "b.mkv"))
    changed = [f.copy() for f in frames]
    changed[2][5, 5, 0] = changed[2][5, 5, 0] ^ 0x04
    different = write_video(tmp_path / "c.mkv", changed)
    build = dict(model_version=model, seeds={"seed": 7}, parameters=PARAMETERS, inputs=INPUTS)
    manifest_a = reproducibility_manifest_build(**build, runtime={"device": "cuda:0"})
    manifest_b = reproducibility_manifest_build(**build, runtime={"device": "cpu"})

    same = reproducibility_compare(manifest_a, manifest_b, original, rerun)
    assert same.reproduced and same.video.byte_identical and same.video.max_abs == 0
    assert [d.path for d in same.runtime_differences] == ["runtime.device"]
    assert same.to_dict()["video"]["min_psnr"] is None  # infinite: identical

    off = reproducibility_compare(manifest_a, manifest_b, original, different)
    assert not off.reproduced and off.same_job
    assert off.video.max_abs == 4
    assert [f.index for f in off.video.frames if f.max_abs] == [2]
    assert off.video.min_psnr > 40
    assert reproducibility_compare(
        manifest_a, manifest_b, original, different, tolerance=4
    ).reproduced

    other_seed = reproducibility_manifest_build(**{**build, "seeds": {"seed": 8}})
    report = reproducibility_compare(manifest_a, other_seed, original, rerun)
    assert not report.same_job and not report.reproduced
    assert [(d.path, d.a, d.b) for d in report.manifest_differences] == [("seeds.seed", 7, 8)]
    assert "NOT REPRODUCED" in report.describe()[0]
