"""Full-size networks built on the meta device have exactly the layout of the released files."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from reenactment.engine.configs import (
    SD_IMAGE_VARIATIONS_UNET_CONFIG,
    XNEMO_SCHEDULER_CONFIG,
    XNEMO_UNET_ADDITIONAL_KWARGS,
)
from reenactment.engine.loading import (
    DENOISING_UNET_FILE,
    MOTION_ENCODER_FILE,
    OFFICIAL_FILES,
    REFERENCE_UNET_FILE,
    TEMPORAL_MODULE_FILE,
    XNemoNetworks,
    build_networks,
    is_temporal_key,
    module_layout,
    official_file_layouts,
    split_denoising_state_dict,
)


@pytest.fixture(scope="module")
def meta_networks() -> XNemoNetworks:
    return build_networks()


def _our_file_layout(networks: XNemoNetworks, file_name: str) -> dict[str, Any]:
    if file_name == REFERENCE_UNET_FILE:
        return module_layout(networks.reference_unet)
    if file_name == MOTION_ENCODER_FILE:
        return module_layout(networks.motion_encoder)
    denoising = module_layout(networks.denoising_unet)
    want_temporal = file_name == TEMPORAL_MODULE_FILE
    return {k: v for k, v in denoising.items() if is_temporal_key(k) == want_temporal}


def test_meta_build_allocates_nothing(meta_networks: XNemoNetworks) -> None:
    for module in (
        meta_networks.reference_unet,
        meta_networks.denoising_unet,
        meta_networks.motion_encoder,
    ):
        devices = {t.device.type for t in module.state_dict().values()}
        assert devices == {"meta"}


@pytest.mark.parametrize("file_name", OFFICIAL_FILES)
def test_layout_matches_official_file(
    meta_networks: XNemoNetworks, reference_keys: dict[str, Any], file_name: str
) -> None:
    entry = reference_keys["files"][file_name]
    expected = {key: (tuple(shape), dtype) for key, shape, dtype in entry["keys"]}
    ours = {
        key: (spec.shape, str(spec.dtype).removeprefix("torch."))
        for key, spec in _our_file_layout(meta_networks, file_name).items()
    }
    assert sorted(ours.keys() - expected.keys()) == []
    assert sorted(expected.keys() - ours.keys()) == []
    assert [k for k in expected if ours[k] != expected[k]] == []
    assert len(ours) == entry["num_tensors"]
    assert (
        sum(spec.numel for spec in _our_file_layout(meta_networks, file_name).values())
        == (entry["num_elements"])
    )


def test_parameter_counts(meta_networks: XNemoNetworks, reference_keys: dict[str, Any]) -> None:
    counts = reference_keys["param_counts"]

    def params(module: torch.nn.Module, marker: str | None = None) -> int:
        return sum(
            p.numel()
            for name, p in module.named_parameters()
            if marker is None or f".{marker}." in f".{name}"
        )

    denoising = meta_networks.denoising_unet
    assert params(meta_networks.reference_unet) == counts["reference_unet"]["parameters"]
    assert params(meta_networks.motion_encoder) == counts["motion_encoder"]["parameters"]
    assert params(denoising) == counts["denoising_unet"]["parameters"]
    assert (
        params(denoising, "motion_modules") == counts["denoising_unet"]["parameters_motion_modules"]
    )
    assert (
        params(denoising, "temporal_modules")
        == counts["denoising_unet"]["parameters_temporal_modules"]
    )
    pe_tables = [k for k in denoising.state_dict() if k.endswith(".pos_encoder.pe")]
    assert len(pe_tables) == counts["denoising_unet"]["num_pos_encoder_pe_buffers"]


def test_official_configs_are_the_released_ones(reference_keys: dict[str, Any]) -> None:
    assert SD_IMAGE_VARIATIONS_UNET_CONFIG == reference_keys["base_unet_config"]
    assert XNEMO_UNET_ADDITIONAL_KWARGS == reference_keys["unet_additional_kwargs"]
    assert XNEMO_SCHEDULER_CONFIG["beta_end"] == 0.02


def test_split_rule_partitions_the_denoiser(meta_networks: XNemoNetworks) -> None:
    state_dict = meta_networks.denoising_unet.state_dict()
    denoising, temporal = split_denoising_state_dict(state_dict)
    assert len(denoising) == 1232 and len(temporal) == 588
    assert all(".motion_modules." in k for k in denoising if "modules." in k)
    assert denoising.keys() | temporal.keys() == state_dict.keys()


def test_official_file_layouts_used_by_the_cli(reference_keys: dict[str, Any]) -> None:
    layouts = official_file_layouts()
    for file_name in OFFICIAL_FILES:
        required, optional = layouts[file_name]
        expected = {key for key, _, _ in reference_keys["files"][file_name]["keys"]}
        if file_name == TEMPORAL_MODULE_FILE:
            assert set(required) | set(optional) == expected
            assert all(k.endswith(".pos_encoder.pe") for k in optional) and len(optional) == 42
        else:
            assert set(required) == expected
    assert set(layouts[DENOISING_UNET_FILE][1]) == {
        key for key, _, _ in reference_keys["files"][TEMPORAL_MODULE_FILE]["keys"]
    }


def test_tiny_fixture_layouts(
    tiny_unet_config: dict[str, Any],
    tiny_unet_kwargs: dict[str, Any],
    tiny_state_dicts: dict[str, dict[str, Any]],
) -> None:
    networks = build_networks(tiny_unet_config, tiny_unet_kwargs)
    reference = {k: tuple(v.shape) for k, v in networks.reference_unet.state_dict().items()}
    denoising = {k: tuple(v.shape) for k, v in networks.denoising_unet.state_dict().items()}
    stored_reference = tiny_state_dicts["xnemo_reference_unet"]
    stored_denoising = {
        **tiny_state_dicts["xnemo_denoising_unet"],
        **tiny_state_dicts["xnemo_temporal_module"],
    }
    assert reference == {k: tuple(v.shape) for k, v in stored_reference.items()}
    assert denoising == {k: tuple(v.shape) for k, v in stored_denoising.items()}
