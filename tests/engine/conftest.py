"""Shared fixtures of the engine tests: fixture location, tiny networks, motion-encoder weights.

The X-NeMo parity fixtures live outside the package. They are looked up in
``<repo>/shared/fixtures`` and then ``<repo>/../shared/fixtures``; the environment variable
``XNEMO_FIXTURES_DIR`` (the ``fixtures`` folder itself) overrides both. A missing fixture makes the
test fail with an explanation - it never skips silently.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
TINY = "xnemo_tiny"
REFERENCE_KEYS = "xnemo_reference_keys.json"


def fixtures_dir() -> Path:
    """The ``fixtures`` folder holding ``xnemo_tiny/`` and ``xnemo_reference_keys.json``."""
    override = os.environ.get("XNEMO_FIXTURES_DIR")
    candidates = (
        [Path(override)]
        if override
        else [REPO_ROOT / "shared" / "fixtures", REPO_ROOT.parent / "shared" / "fixtures"]
    )
    for candidate in candidates:
        if (candidate / TINY).is_dir() and (candidate / REFERENCE_KEYS).is_file():
            return candidate
    pytest.fail(
        "X-NeMo fixtures not found; looked in "
        + ", ".join(str(c) for c in candidates)
        + f" for {TINY}/ and {REFERENCE_KEYS}. Set XNEMO_FIXTURES_DIR to the fixtures folder."
    )


def fixture_file(name: str) -> Path:
    """A file of the tiny fixture (fails the test when it is absent)."""
    path = fixtures_dir() / TINY / name
    if not path.is_file():
        pytest.fail(f"X-NeMo fixture file missing: {path}")
    return path


@pytest.fixture(scope="session", autouse=True)
def _torch_threads() -> Any:
    """Two intra-op threads: what the fixture was made with, and what CI machines have."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def reference_keys() -> dict[str, Any]:
    return json.loads((fixtures_dir() / REFERENCE_KEYS).read_text())


@pytest.fixture(scope="session")
def tiny_unet_config() -> dict[str, Any]:
    return json.loads(fixture_file("unet_config.json").read_text())


@pytest.fixture(scope="session")
def tiny_unet_kwargs() -> dict[str, Any]:
    return json.loads(fixture_file("unet_additional_kwargs.json").read_text())


@pytest.fixture(scope="session")
def scheduler_config() -> dict[str, Any]:
    config = json.loads(fixture_file("scheduler_config.json").read_text())
    return {k: v for k, v in config.items() if not k.startswith("_")}


@pytest.fixture(scope="session")
def tiny_inputs() -> dict[str, Any]:
    from safetensors.torch import load_file

    return load_file(str(fixture_file("inputs.safetensors")))


@pytest.fixture(scope="session")
def tiny_outputs() -> dict[str, Any]:
    from safetensors.torch import load_file

    return load_file(str(fixture_file("outputs.safetensors")))


@pytest.fixture(scope="session")
def tiny_state_dicts() -> dict[str, dict[str, Any]]:
    """The tiny UNet state dicts as stored in the fixture (split per official file)."""
    from safetensors.torch import load_file

    return {
        name: load_file(str(fixture_file(f"{name}.safetensors")))
        for name in ("xnemo_reference_unet", "xnemo_denoising_unet", "xnemo_temporal_module")
    }


@pytest.fixture(scope="session")
def tiny_unets(
    tiny_unet_config: dict[str, Any],
    tiny_unet_kwargs: dict[str, Any],
    tiny_state_dicts: dict[str, dict[str, Any]],
) -> tuple[Any, Any]:
    """(reference UNet, denoising UNet) of the tiny config, fixture weights, eval mode."""
    from reenactment.engine.networks import UNet2DReferenceModel, UNet3DDenoisingModel

    reference = UNet2DReferenceModel.from_config(tiny_unet_config).eval()
    denoising = UNet3DDenoisingModel.from_2d_config(tiny_unet_config, tiny_unet_kwargs).eval()
    reference.load_state_dict(tiny_state_dicts["xnemo_reference_unet"], strict=True)
    denoising.load_state_dict(
        {
            **tiny_state_dicts["xnemo_denoising_unet"],
            **tiny_state_dicts["xnemo_temporal_module"],
        },
        strict=True,
    )
    return reference, denoising


@pytest.fixture(scope="session")
def motion_encoder_state_dict() -> dict[str, Any]:
    """The real-size motion-encoder weights, regenerated from the fixture recipe and verified."""
    import torch
    from safetensors.torch import load_file

    recipe = json.loads(fixture_file("xnemo_motion_encoder.recipe.json").read_text())
    state_dict = dict(load_file(str(fixture_file("xnemo_motion_encoder.verbatim.safetensors"))))
    for entry in recipe["tensors"]:
        generator = torch.Generator(device="cpu").manual_seed(entry["seed"])
        weight = torch.rand(entry["shape"], generator=generator, dtype=torch.float32)
        weight = (weight * 2.0 - 1.0) * entry["bound"]
        digest = hashlib.sha256(weight.numpy().astype("<f4").tobytes()).hexdigest()
        if digest != entry["sha256_f32le"]:
            pytest.fail(f"regenerated motion-encoder tensor {entry['key']} differs from the recipe")
        state_dict[entry["key"]] = weight
    return {key: state_dict[key] for key in recipe["key_order"]}


@pytest.fixture(scope="session")
def motion_encoder(motion_encoder_state_dict: dict[str, Any]) -> Any:
    from reenactment.engine.networks import MotionEncoder

    model = MotionEncoder().eval()
    model.load_state_dict(motion_encoder_state_dict, strict=True)
    return model


@pytest.fixture(scope="session")
def tiny_dir() -> Path:
    """``<fixtures>/xnemo_tiny`` (fails the test when absent)."""
    return fixture_file("README.md").parent
