"""Gradient checkpointing hook shared by the big blocks of the X-NeMo networks.

diffusers' ``ModelMixin.enable_gradient_checkpointing()`` sets ``gradient_checkpointing = True``
and a ``_gradient_checkpointing_func`` on every sub-module that has a ``gradient_checkpointing``
attribute; blocks deriving from :class:`CheckpointedModule` then route their heavy sub-module
calls through :meth:`CheckpointedModule.run_checkpointed`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn


def _non_reentrant_checkpoint(module: nn.Module, *args: Any) -> Any:
    # Non-reentrant checkpointing also works with outputs used outside the block (the
    # reference banks escape the reference UNet's transformer blocks).
    return torch.utils.checkpoint.checkpoint(module.__call__, *args, use_reentrant=False)


class CheckpointedModule(nn.Module):
    """An ``nn.Module`` whose heavy sub-module calls can be recomputed in the backward pass."""

    def __init__(self) -> None:
        super().__init__()
        self.gradient_checkpointing = False

    def run_checkpointed(self, module: nn.Module, *args: Any) -> Any:
        """``module(*args)``, checkpointed when enabled and gradients are being recorded."""
        if self.gradient_checkpointing and torch.is_grad_enabled():
            checkpoint: Callable[..., Any] = getattr(
                self, "_gradient_checkpointing_func", _non_reentrant_checkpoint
            )
            return checkpoint(module, *args)
        return module(*args)
