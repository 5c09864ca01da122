"""The adapter protocol every architecture implements.

An adapter turns a ``ModelSpec`` into an ``nn.Module`` (``build``) and runs it
(``logits``: NCHW float in, NCHW logits at the input's size out). It wraps the field's
libraries (MONAI, transformers, timm, segmentation-models-pytorch) rather than
re-implementing them.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from slicewise.models.spec import ModelSpec


class Adapter:
    """Base adapter: subclasses set the class attributes and implement ``create``."""

    arch: ClassVar[str]
    family: ClassVar[str]
    kind: ClassVar[str]  # "SMA" (specialised medical architecture) or "GP-VM" (general-purpose)
    description: ClassVar[str]
    default_kwargs: ClassVar[dict[str, Any]] = {}
    supports_prompts: ClassVar[bool] = False
    cam_target_layer: ClassVar[str | None] = None
    channels_last: ClassVar[bool] = True  # convolutional nets run faster channels-last on CPU

    def input_divisor(self, spec: ModelSpec) -> int:
        """Height and width must be a multiple of this; the core pads to it."""
        return spec.input.divisor

    def kwargs(self, spec: ModelSpec) -> dict[str, Any]:
        """The architecture's defaults overridden by the spec's ``init_kwargs``."""
        return {**self.default_kwargs, **spec.init_kwargs}

    def create(self, in_channels: int, num_classes: int, **kwargs: Any) -> nn.Module:
        raise NotImplementedError

    def build(self, spec: ModelSpec) -> nn.Module:
        """A randomly initialised network for ``spec`` (weights are loaded by the caller)."""
        return self.create(spec.input.channels, spec.output.num_classes, **self.kwargs(spec))

    def logits(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """NCHW logits at the size of ``x``."""
        return model(x)


def resize_logits(logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear upsampling for heads that predict at a lower resolution (SegFormer, UperNet)."""
    if tuple(logits.shape[-2:]) == tuple(size):
        return logits
    return nn.functional.interpolate(logits, size=size, mode="bilinear", align_corners=False)
