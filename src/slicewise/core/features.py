"""Frozen pretrained features of a slice, computed once and cached for every few-label tool.

``slice_features`` prepares a slice the one way every pretrained encoder takes it (channels to
RGB, min-max to [0, 1], long side to the working size, padded to the encoder's divisor), runs
the frozen encoder and keeps its feature pyramid in a process-wide cache keyed by the encoder
and a digest of the pixels, so teaching, predicting and choosing the next slice never encode a
slice twice, and an edited image is never served stale features.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

from slicewise.core.preprocess import pad_to_divisor, to_network_frame
from slicewise.core.prompting import slice_key
from slicewise.models.encoders import FeatureEncoder, build_encoder, get_encoder
from slicewise.models.spec import InputSpec

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


def is_cached(encoder: str, image: np.ndarray) -> bool:
    """Whether ``image``'s features under ``encoder`` are already computed."""
    return (encoder, slice_key(image)) in FEATURES


def slice_features(encoder: str, image: np.ndarray, *, size: int = WORKING_SIZE) -> SliceFeatures:
    """The frozen features of one slice, from the cache or computed (and cached) now.

    image: (H, W) or (H, W, C) of any dtype; never mutated.
    """
    key = (f"{encoder}@{size}", slice_key(image))
    cached = FEATURES.get(key)
    if cached is not None:
        return cached
    spec = encoder_input_spec(encoder, size)
    frame = to_network_frame(np.asarray(image), spec)
    batch = torch.from_numpy(pad_to_divisor(frame, spec.divisor)).unsqueeze(0)
    with torch.inference_mode():
        maps = frozen_encoder(encoder)(batch)
    features = SliceFeatures(
        maps=tuple(m.float().contiguous() for m in maps),
        image=batch,
        inner=tuple(frame.shape[-2:]),
        shape=tuple(np.asarray(image).shape[:2]),
    )
    FEATURES.put(key, features)
    return features
