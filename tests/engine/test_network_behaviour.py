"""Behaviour of the networks beyond fixture parity: precision, checkpointing, guards."""

from __future__ import annotations

import copy
import os
from typing import Any

import pytest
import torch

from reenactment.engine.networks import (
    ReferenceAttentionControl,
    ReferenceMode,
    cfg_clip_embeds,
    guided_noise_prediction,
    load_reference_banks,
    run_reference_pass,
)
from reenactment.engine.networks.positional import interleaved_sincos, sincos_2d


def _step_inputs(inputs: dict[str, torch.Tensor], dtype: torch.dtype) -> dict[str, Any]:
    return {
        "latents": inputs["step.latents"].to(dtype),
        "timestep": inputs["step.timestep"][0],
        "clip": inputs["step.clip_embeds"].to(dtype),
        "tokens": inputs["step.motion_tokens"].to(dtype),
        "neg": inputs["step.neg_motion_tokens"].to(dtype),
        "ref": inputs["step.ref_latents"].to(dtype),
    }


def test_bfloat16_reference_attention_follows_model_dtype(
    tiny_unets: tuple[Any, Any], tiny_inputs: dict[str, torch.Tensor]
) -> None:
    """The official unconditional float16 bank cast breaks bf16; banks here follow the model."""
    reference, denoising = (copy.deepcopy(m).to(torch.bfloat16) for m in tiny_unets)
    x = _step_inputs(tiny_inputs, torch.bfloat16)
    with (
        torch.no_grad(),
        ReferenceAttentionControl(
            reference, denoising, do_classifier_free_guidance=True
        ) as control,
    ):
        banks = control.write(x["ref"], x["clip"])
        assert {bank.dtype for bank in banks.values()} == {torch.bfloat16}
        assert {block.reference_bank.dtype for block in denoising.reference_blocks().values()} == {
            torch.bfloat16
        }
        step = guided_noise_prediction(
            denoising, x["latents"], x["timestep"], x["clip"], x["tokens"], x["neg"], 2.5
        )
    assert step.noise_pred.dtype == torch.bfloat16
    assert torch.isfinite(step.noise_pred.float()).all()


def test_unconditional_rows_never_see_the_reference(
    tiny_unets: tuple[Any, Any], tiny_inputs: dict[str, torch.Tensor]
) -> None:
    reference, denoising = tiny_unets
    x = _step_inputs(tiny_inputs, torch.float32)
    with torch.no_grad():
        ref_latents = x["ref"].repeat(2, 1, 1, 1)
        banks = run_reference_pass(reference, ref_latents, cfg_clip_embeds(x["clip"]))
        try:
            load_reference_banks(denoising, banks, do_classifier_free_guidance=True)
            first = guided_noise_prediction(
                denoising, x["latents"], x["timestep"], x["clip"], x["tokens"], x["neg"], 2.5
            )
            load_reference_banks(
                denoising,
                {k: v + 1.0 for k, v in banks.items()},
                do_classifier_free_guidance=True,
            )
            second = guided_noise_prediction(
                denoising, x["latents"], x["timestep"], x["clip"], x["tokens"], x["neg"], 2.5
            )
        finally:
            for block in denoising.reference_blocks().values():
                block.reference_mode, block.reference_bank = ReferenceMode.OFF, None
    uncond_first, cond_first = first.noise_pred_cfg_batch.chunk(2)
    uncond_second, cond_second = second.noise_pred_cfg_batch.chunk(2)
    torch.testing.assert_close(uncond_first, uncond_second, rtol=0, atol=0)
    assert (cond_first - cond_second).abs().max() > 1e-3


def test_read_mode_without_bank_is_an_error(
    tiny_unets: tuple[Any, Any], tiny_inputs: dict[str, torch.Tensor]
) -> None:
    _, denoising = tiny_unets
    x = _step_inputs(tiny_inputs, torch.float32)
    block = next(iter(denoising.reference_blocks().values()))
    block.reference_mode = ReferenceMode.READ
    try:
        with torch.no_grad(), pytest.raises(RuntimeError, match="no bank"):
            denoising(x["latents"], x["timestep"], [x["clip"], x["tokens"]])
    finally:
        block.reference_mode = ReferenceMode.OFF


def test_more_frames_than_the_position_table_is_refused(
    tiny_unets: tuple[Any, Any], tiny_inputs: dict[str, torch.Tensor]
) -> None:
    _, denoising = tiny_unets
    latents = torch.zeros(1, 4, 33, 8, 8)
    tokens = torch.zeros(1, 33, 32, 16)
    with torch.no_grad(), pytest.raises(ValueError, match="temporal position table"):
        denoising(latents, 1, [tiny_inputs["step.clip_embeds"], tokens])


def test_gradient_checkpointing_gives_identical_gradients(
    tiny_unets: tuple[Any, Any], tiny_inputs: dict[str, torch.Tensor]
) -> None:
    _, trained = tiny_unets
    x = _step_inputs(tiny_inputs, torch.float32)
    results = []
    for checkpointing in (False, True):
        model = copy.deepcopy(trained).train()
        if checkpointing:
            model.enable_gradient_checkpointing()
            assert all(block.gradient_checkpointing for block in model.down_blocks)
        output = model(x["latents"], x["timestep"], [x["clip"], x["tokens"]]).sample
        output.square().mean().backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        results.append((output.detach(), grads))
    (out_plain, grads_plain), (out_ckpt, grads_ckpt) = results
    torch.testing.assert_close(out_ckpt, out_plain, rtol=0, atol=0)
    assert grads_plain.keys() == grads_ckpt.keys() and len(grads_plain) > 0
    for name, grad in grads_plain.items():
        torch.testing.assert_close(grads_ckpt[name], grad, rtol=0, atol=0, msg=name)


def test_position_tables_match_their_formulas() -> None:
    table = interleaved_sincos(32, 8)
    assert table.shape == (1, 32, 8)
    torch.testing.assert_close(table[0, 3, 0], torch.tensor(3.0).sin())
    torch.testing.assert_close(table[0, 3, 1], torch.tensor(3.0).cos())
    patch = sincos_2d(8, 4)  # token t = row * 4 + col; first half encodes the column
    torch.testing.assert_close(patch[0, 1 * 4 + 2, 0], torch.tensor(2.0).sin())
    torch.testing.assert_close(patch[0, 1 * 4 + 2, 4], torch.tensor(1.0).sin())


@pytest.mark.gpu
@pytest.mark.skipif(
    os.environ.get("RUN_GPU") != "1" or not torch.cuda.is_available(),
    reason="needs RUN_GPU=1 and a CUDA device",
)
def test_cuda_float32_step_matches_fixture(
    tiny_unets: tuple[Any, Any],
    tiny_inputs: dict[str, torch.Tensor],
    tiny_outputs: dict[str, torch.Tensor],
) -> None:
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    reference, denoising = (copy.deepcopy(m).cuda() for m in tiny_unets)
    x = {k: v.cuda() for k, v in _step_inputs(tiny_inputs, torch.float32).items()}
    with (
        torch.no_grad(),
        ReferenceAttentionControl(
            reference, denoising, do_classifier_free_guidance=True
        ) as control,
    ):
        control.write(x["ref"], x["clip"])
        step = guided_noise_prediction(
            denoising, x["latents"], x["timestep"], x["clip"], x["tokens"], x["neg"], 2.5
        )
    torch.testing.assert_close(
        step.noise_pred_cfg_batch.cpu(),
        tiny_outputs["step.noise_pred_cfg_batch"],
        rtol=1e-4,
        atol=1e-4,
    )


def test_motion_encoder_gradient_checkpointing(
    motion_encoder: Any, tiny_inputs: dict[str, torch.Tensor]
) -> None:
    images = tiny_inputs["motenc.x4"][:1]
    params = tiny_inputs["motenc.emb4"][:1]
    results = []
    for checkpointing in (False, True):
        model = copy.deepcopy(motion_encoder).eval()  # eval: BatchNorm statistics stay fixed
        if checkpointing:
            model.enable_gradient_checkpointing()
            assert model.model.gradient_checkpointing
        model(images, params).square().mean().backward()
        results.append({n: p.grad for n, p in model.named_parameters() if p.grad is not None})
    plain, checkpointed = results
    assert plain.keys() == checkpointed.keys() and "model.att_1.proj_out.weight" in plain
    for name, grad in plain.items():
        torch.testing.assert_close(checkpointed[name], grad, rtol=0, atol=0, msg=name)
