"""Frozen pretrained features of a slice, computed once and cached for every few-label tool.

``slice_features`` prepares a slice the one way every pretrained encoder takes it (channels to
RGB, min-max to [0, 1], long side to the working size, padded to the encoder's divisor), runs
the frozen encoder and keeps its feature pyramid in a process-wide cache keyed by the encoder
and a digest of the pixels, so teaching, predicting and choosing the next slice never encode a
slice twice, and an edited image is never served stale features.

A promptable model whose image encoder *is* one of these encoders (``shared_encoder``: LiteMedSAM
and the TinyViT teach uses) shares the cache: a slice embedded for a box prompt is not encoded
again to teach, and the other way round.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING
from weakref import WeakKeyDictionary

import numpy as np
import torch

from slicewise.core.preprocess import network_shape, pad_to_divisor, to_network_frame
from slicewise.models.encoders import FeatureEncoder, available_encoders, build_encoder, get_encoder
from slicewise.models.spec import InputSpec

if TYPE_CHECKING:
    from slicewise.models.loaded import LoadedModel

WORKING_SIZE = 256  # the long side slices are encoded at: fine enough for vessels, fast on a CPU
_CACHE_BYTES = 1 << 30


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

    @property
    def nbytes(self) -> int:
        return sum(m.numel() * m.element_size() for m in (*self.maps, self.image))


class FeatureCache:
    """Least-recently-used slice features up to a memory budget; thread-safe."""

    def __init__(self, max_bytes: int = _CACHE_BYTES) -> None:
        self.max_bytes = max_bytes
        self._items: OrderedDict[tuple[str, str], SliceFeatures] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def __contains__(self, key: tuple[str, str]) -> bool:
        return key in self._items

    def get(self, key: tuple[str, str]) -> SliceFeatures | None:
        with self._lock:
            found = self._items.get(key)
            if found is not None:
                self._items.move_to_end(key)
            return found

    def put(self, key: tuple[str, str], features: SliceFeatures) -> None:
        with self._lock:
            previous = self._items.pop(key, None)
            self._bytes += features.nbytes - (previous.nbytes if previous is not None else 0)
            self._items[key] = features
            while len(self._items) > 1 and self._bytes > self.max_bytes:
                self._bytes -= self._items.popitem(last=False)[1].nbytes

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._bytes = 0


FEATURES = FeatureCache()


@lru_cache(maxsize=4)
def frozen_encoder(name: str) -> FeatureEncoder:
    """The frozen encoder ``name`` with its pretrained weights, built once per process (read-only)."""
    return build_encoder(name)


def slice_key(image: np.ndarray) -> str:
    """A digest of a slice's shape, dtype and pixels (about 1 ms per megabyte)."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(f"{image.shape}{image.dtype}".encode())
    digest.update(np.ascontiguousarray(image).data)
    return digest.hexdigest()


def _key(encoder: str, image: np.ndarray, size: int) -> tuple[str, str]:
    return (f"{encoder}@{size}", slice_key(image))


def cached_features(encoder: str, image: np.ndarray, *, size: int = WORKING_SIZE) -> SliceFeatures | None:
    """The slice's features under ``encoder`` if some tool has computed them already, else None."""
    return FEATURES.get(_key(encoder, image, size))


def keep_features(
    encoder: str, image: np.ndarray, batch: torch.Tensor, maps: list[torch.Tensor], *, size: int = WORKING_SIZE
) -> SliceFeatures:
    """Cache ``maps``, the features ``encoder`` gave for ``batch`` (``image`` prepared by
    ``encoder_input_spec``, padded), computed here or by a model that shares the encoder."""
    height, width = np.asarray(image).shape[:2]
    features = SliceFeatures(
        maps=tuple(m.detach().float().cpu().contiguous() for m in maps),
        image=batch.detach().cpu(),
        inner=network_shape(height, width, encoder_input_spec(encoder, size).size),
        shape=(height, width),
    )
    FEATURES.put(_key(encoder, image, size), features)
    return features


def slice_features(encoder: str, image: np.ndarray, *, size: int = WORKING_SIZE) -> SliceFeatures:
    """The frozen features of one slice, from the cache or computed (and cached) now.

    image: (H, W) or (H, W, C) of any dtype; never mutated.
    """
    cached = cached_features(encoder, image, size=size)
    if cached is not None:
        return cached
    spec = encoder_input_spec(encoder, size)
    batch = torch.from_numpy(pad_to_divisor(to_network_frame(np.asarray(image), spec), spec.divisor)).unsqueeze(0)
    with torch.inference_mode():
        maps = frozen_encoder(encoder)(batch)
    return keep_features(encoder, image, batch, maps, size=size)


_SHARED: WeakKeyDictionary[LoadedModel, str | None] = WeakKeyDictionary()
_SHARED_LOCK = threading.Lock()


def shared_encoder(model: LoadedModel) -> str | None:
    """The pretrained encoder a promptable model's image encoder is — the same weights, slices
    prepared the same way, float32 arithmetic — so that its embeddings and that encoder's
    features are one cache entry; None for any other model (a fine-tuned LiteMedSAM, say).
    Decided once per loaded model."""
    with _SHARED_LOCK:
        if model in _SHARED:
            return _SHARED[model]
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
    reference = frozen_encoder(encoder).network.state_dict()
    same = set(ours) == set(reference) and all(
        ours[k].shape == reference[k].shape and torch.equal(ours[k].cpu(), reference[k]) for k in reference
    )
    return encoder if same else None
