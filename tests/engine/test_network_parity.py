"""Numerical parity with the official X-NeMo code on the tiny fixture (computed by the release).

Every comparison uses ``rtol=1e-4, atol=1e-4`` (about 10x above the float32 noise the fixture
documents and 100x below the smallest implementation mistake it measured).

Reference banks: the official code casts them to float16 before the hand-over; this
implementation keeps the model dtype (float32 here) on purpose. Outputs are therefore compared
with both the official values and the fixture's ``variant_bank_fp32`` values, and the float16
rounding is reproduced once through ``bank_dtype`` to show it is the only difference.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from diffusers import DDIMScheduler

from reenactment.engine.networks import (
    ReferenceAttentionControl,
    cfg_clip_embeds,
    guided_noise_prediction,
    load_reference_banks,
    run_reference_pass,
)

TOLERANCE = {"rtol": 1e-4, "atol": 1e-4}
GUIDANCE_SCALE = 2.5


def assert_close(actual: torch.Tensor, expected: torch.Tensor) -> None:
    torch.testing.assert_close(actual, expected, **TOLERANCE)


# --- (a) motion encoder ------------------------------------------------------------------------


def test_motion_encoder_images(
    motion_encoder: Any, tiny_inputs: dict[str, torch.Tensor], tiny_outputs: dict[str, torch.Tensor]
) -> None:
    with torch.no_grad():
        features = motion_encoder.encode_face_motion(tiny_inputs["motenc.x4"])
        tokens = motion_encoder(tiny_inputs["motenc.x4"], tiny_inputs["motenc.emb4"])
    assert tokens.shape == (2, 32, 16)
    assert_close(features, tiny_outputs["motenc.debug.fan_feature4"])
    assert_close(tokens, tiny_outputs["motenc.out4"])


def test_motion_encoder_clip(
    motion_encoder: Any, tiny_inputs: dict[str, torch.Tensor], tiny_outputs: dict[str, torch.Tensor]
) -> None:
    with torch.no_grad():
        tokens = motion_encoder(tiny_inputs["motenc.x5"], tiny_inputs["motenc.emb5"])
    assert tokens.shape == (1, 2, 32, 16)
    assert_close(tokens, tiny_outputs["motenc.out5"])


# --- (b) reference UNet and one denoising step -------------------------------------------------


@pytest.fixture
def unets(tiny_unets: tuple[Any, Any]) -> Any:
    """The session UNets, with every bank released after the test."""
    reference, denoising = tiny_unets
    with ReferenceAttentionControl(reference, denoising, do_classifier_free_guidance=True):
        yield reference, denoising


def _cfg_reference_pass(reference: Any, inputs: dict[str, torch.Tensor]) -> dict[str, Any]:
    latents = inputs["step.ref_latents"].repeat(2, 1, 1, 1)
    return run_reference_pass(reference, latents, cfg_clip_embeds(inputs["step.clip_embeds"]))


def test_reference_unet_output_and_banks(
    unets: tuple[Any, Any],
    tiny_inputs: dict[str, torch.Tensor],
    tiny_outputs: dict[str, torch.Tensor],
) -> None:
    reference, _ = unets
    latents = tiny_inputs["step.ref_latents"].repeat(2, 1, 1, 1)
    embeds = cfg_clip_embeds(tiny_inputs["step.clip_embeds"])
    with torch.no_grad():
        output = reference(latents, 0, embeds).sample
        banks = _cfg_reference_pass(reference, tiny_inputs)
    assert_close(output, tiny_outputs["refunet.out_cfg_batch"])
    expected = {
        key.removeprefix("step.debug.bank."): value
        for key, value in tiny_outputs.items()
        if key.startswith("step.debug.bank.")
    }
    assert banks.keys() == expected.keys()
    for name, bank in banks.items():
        assert_close(bank, expected[name])


def test_plain_step_without_reference(
    unets: tuple[Any, Any],
    tiny_inputs: dict[str, torch.Tensor],
    tiny_outputs: dict[str, torch.Tensor],
) -> None:
    _, denoising = unets
    with torch.no_grad():
        prediction = denoising(
            tiny_inputs["step.latents"],
            tiny_inputs["step.timestep"][0],
            [tiny_inputs["step.clip_embeds"], tiny_inputs["step.motion_tokens"]],
        ).sample
    assert_close(prediction, tiny_outputs["plain.noise_pred"])


def _cfg_step(
    unets: tuple[Any, Any], inputs: dict[str, torch.Tensor], bank_dtype: torch.dtype | None
) -> Any:
    reference, denoising = unets
    with torch.no_grad():
        banks = _cfg_reference_pass(reference, inputs)
        load_reference_banks(denoising, banks, do_classifier_free_guidance=True, dtype=bank_dtype)
        return guided_noise_prediction(
            denoising,
            inputs["step.latents"],
            inputs["step.timestep"][0],
            inputs["step.clip_embeds"],
            inputs["step.motion_tokens"],
            inputs["step.neg_motion_tokens"],
            GUIDANCE_SCALE,
        )


def test_cfg_step_with_reference_attention(
    unets: tuple[Any, Any],
    tiny_inputs: dict[str, torch.Tensor],
    tiny_outputs: dict[str, torch.Tensor],
) -> None:
    step = _cfg_step(unets, tiny_inputs, bank_dtype=None)
    assert step.noise_pred_cfg_batch.shape == (2, 4, 4, 16, 16)
    assert_close(step.noise_pred_cfg_batch, tiny_outputs["step.noise_pred_cfg_batch"])
    assert_close(
        step.noise_pred_cfg_batch, tiny_outputs["step.variant_bank_fp32.noise_pred_cfg_batch"]
    )
    assert_close(step.noise_pred, tiny_outputs["step.noise_pred_guided"])


def test_cfg_step_with_official_fp16_bank_rounding(
    unets: tuple[Any, Any],
    tiny_inputs: dict[str, torch.Tensor],
    tiny_outputs: dict[str, torch.Tensor],
) -> None:
    step = _cfg_step(unets, tiny_inputs, bank_dtype=torch.float16)
    assert_close(step.noise_pred_cfg_batch, tiny_outputs["step.noise_pred_cfg_batch"])
    assert_close(step.noise_pred, tiny_outputs["step.noise_pred_guided"])


def test_step_without_cfg(
    tiny_unets: tuple[Any, Any],
    tiny_inputs: dict[str, torch.Tensor],
    tiny_outputs: dict[str, torch.Tensor],
) -> None:
    reference, denoising = tiny_unets
    clip = tiny_inputs["step.clip_embeds"]
    with (
        torch.no_grad(),
        ReferenceAttentionControl(
            reference, denoising, do_classifier_free_guidance=False
        ) as control,
    ):
        control.write(tiny_inputs["step.ref_latents"], clip)
        prediction = denoising(
            tiny_inputs["step.latents"],
            tiny_inputs["step.timestep"][0],
            [clip, tiny_inputs["step.motion_tokens"]],
        ).sample
    assert_close(prediction, tiny_outputs["step_nocfg.noise_pred"])


# --- (c) two DDIM steps with guidance 2.5 ------------------------------------------------------


def test_two_step_ddim_loop(
    tiny_unets: tuple[Any, Any],
    motion_encoder: Any,
    scheduler_config: dict[str, Any],
    tiny_inputs: dict[str, torch.Tensor],
    tiny_outputs: dict[str, torch.Tensor],
) -> None:
    reference, denoising = tiny_unets
    scheduler = DDIMScheduler(**scheduler_config)
    scheduler.set_timesteps(2)
    torch.testing.assert_close(scheduler.timesteps, tiny_inputs["ddim.timesteps"])
    clip = tiny_inputs["ddim.clip_embeds"]

    with torch.no_grad():
        neg_tokens = motion_encoder(
            tiny_inputs["ddim.ref_pose_crop"], tiny_inputs["ddim.ref_bbox_param"]
        )
        # The official loop re-encodes the (unchanged) driving crops at every step.
        motion_tokens = motion_encoder(
            tiny_inputs["ddim.pose_crops"], tiny_inputs["ddim.bbox_params"]
        )
    assert_close(neg_tokens, tiny_outputs["ddim.neg_motion_tokens"])

    latents = tiny_inputs["ddim.init_latents"]
    with (
        torch.no_grad(),
        ReferenceAttentionControl(
            reference, denoising, do_classifier_free_guidance=True
        ) as control,
    ):
        control.write(tiny_inputs["ddim.ref_latents"], clip)
        for index, timestep in enumerate(scheduler.timesteps):
            assert_close(motion_tokens, tiny_outputs[f"ddim.step{index}.motion_tokens"])
            step = guided_noise_prediction(
                denoising, latents, timestep, clip, motion_tokens, neg_tokens, GUIDANCE_SCALE
            )
            assert_close(
                step.noise_pred_cfg_batch, tiny_outputs[f"ddim.step{index}.noise_pred_cfg_batch"]
            )
            assert_close(step.noise_pred, tiny_outputs[f"ddim.step{index}.noise_pred_guided"])
            latents = scheduler.step(step.noise_pred, timestep, latents, eta=0.0).prev_sample
            assert_close(latents, tiny_outputs[f"ddim.step{index}.latents_out"])

    assert_close(latents, tiny_outputs["ddim.final_latents"])
    assert_close(latents, tiny_outputs["ddim.variant_bank_fp32.final_latents"])
