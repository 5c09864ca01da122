"""Box and point prompts for SAM-style models: embed a slice once, decode every prompt against it.

The image encoder is the expensive half (about 1.5 s a slice for LiteMedSAM on two CPU cores);
the prompt encoder and mask decoder take tens of milliseconds. So each model keeps its recent
slice embeddings, keyed by a digest of the slice's pixels: a second box on the same slice, or the
same slice seen again, costs only the decode, and an edited image can never reuse a stale
embedding. Coordinates are slice pixels, x = column, y = row, as napari shows them.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import OrderedDict
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from weakref import WeakKeyDictionary

import numpy as np
import torch
from scipy.ndimage import binary_dilation

from slicewise.core.features import FEATURES, shared_encoder
from slicewise.core.inference import autocast_for, probabilities_from_logits, run_to_end, to_slice
from slicewise.core.preprocess import network_shape, prepare
from slicewise.core.slices import take_slice
from slicewise.core.types import Prediction, Progress, SliceRef
from slicewise.core.uncertainty import normalized_entropy, slice_score
from slicewise.errors import OptionError, SlicewiseError, printable
from slicewise.models.adapters.box_refine import widened_box
from slicewise.models.loaded import LoadedModel

Box = tuple[float, float, float, float]
Point = tuple[float, float]


@dataclass(frozen=True)
class Prompt:
    """What marks the object: a box ``(x0, y0, x1, y1)`` and/or points ``(x, y)`` with labels
    (1 = on the object, 0 = background), in pixels of the slice."""

    box: Box | None = None
    points: tuple[Point, ...] = ()
    point_labels: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.box is None and not self.points:
            raise SlicewiseError("A prompt needs a box or at least one point; draw a box around the object.")
        if len(self.point_labels) != len(self.points):
            raise SlicewiseError(
                f"{len(self.points)} points but {len(self.point_labels)} point labels; give one label (1 = object, "
                "0 = background) per point."
            )
        if any(not hasattr(p, "__len__") or len(p) != 2 for p in self.points):
            raise OptionError("Each point is two numbers (x, y) in pixels; draw the points again.")
        if self.box is not None:
            try:
                values = [float(v) for v in self.box]
            except (TypeError, ValueError):
                values = []
            if len(values) != 4 or not all(np.isfinite(values)):
                raise OptionError(
                    f"A box is four finite numbers (x0, y0, x1, y1) in pixels, got {printable(self.box)[:60]}; "
                    "draw the box again."
                )
            x0, y0, x1, y1 = values
            object.__setattr__(self, "box", (min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)))

    def describe(self) -> str:
        """E.g. ``"box (10, 20)–(80, 95)"`` or ``"2 points"``, for status lines."""
        parts = []
        if self.box is not None:
            x0, y0, x1, y1 = (round(v) for v in self.box)
            parts.append(f"box ({x0}, {y0})–({x1}, {y1})")
        if self.points:
            parts.append(f"{len(self.points)} point{'s' if len(self.points) > 1 else ''}")
        return " + ".join(parts)


def with_points(boxes: Sequence[Prompt], points: Sequence[Point], point_labels: Sequence[int]) -> tuple[Prompt, ...]:
    """The prompts of one slice: its boxes, the points joining the box when there is one (SAM decodes a
    box and its points together), else making a prompt of their own."""
    boxes = tuple(boxes)
    if not points:
        return boxes
    points, labels = tuple(tuple(p) for p in points), tuple(int(v) for v in point_labels)
    if len(boxes) == 1:
        return (Prompt(box=boxes[0].box, points=points, point_labels=labels),)
    return (*boxes, Prompt(points=points, point_labels=labels))


def describe_prompts(prompts: Sequence[Prompt]) -> str:
    """E.g. ``"1 box"``, ``"2 boxes + 3 points"``, for status lines."""
    boxes = sum(p.box is not None for p in prompts)
    points = sum(len(p.points) for p in prompts)
    parts = [f"{boxes} box{'es' if boxes > 1 else ''}"] if boxes else []
    return " + ".join(parts + ([f"{points} point{'s' if points > 1 else ''}"] if points else []))


@dataclass(frozen=True, eq=False)
class SliceEmbedding:
    """A slice's image embedding and where the slice sits in the network frame."""

    features: torch.Tensor  # (1, C, h, w) on the model's device
    height: int
    width: int
    inner: tuple[int, int]  # the slice's (H, W) inside the padded frame

    scale: float  # network-frame pixels per slice pixel: the frame's long side over the slice's


class EmbeddingCache:
    """The most recently used slice embeddings of one model, keyed by ``slice_key``.

    Thread-safe: a prompt job and a propagation may use one model's cache at the same time.
    """

    def __init__(self, max_items: int = 32) -> None:
        self.max_items = max_items
        self._items: OrderedDict[str, SliceEmbedding] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: str) -> bool:
        return key in self._items

    def get(self, key: str) -> SliceEmbedding | None:
        """The embedding stored under ``key`` (now the most recently used), or None."""
        with self._lock:
            embedding = self._items.get(key)
            if embedding is not None:
                self._items.move_to_end(key)
            return embedding

    def put(self, key: str, embedding: SliceEmbedding) -> None:
        """Store ``embedding``; the least recently used ones go beyond ``max_items``."""
        with self._lock:
            self._items[key] = embedding
            self._items.move_to_end(key)
            while len(self._items) > self.max_items:
                self._items.popitem(last=False)

    def clear(self) -> None:
        """Forget every embedding (a benchmark's "new slice"; the next box on any slice encodes it)."""
        with self._lock:
            self._items.clear()


_CACHES: WeakKeyDictionary[LoadedModel, EmbeddingCache] = WeakKeyDictionary()
_CACHES_LOCK = threading.Lock()


def embedding_cache(model: LoadedModel) -> EmbeddingCache:
    """The model's own embedding cache; it lives exactly as long as the loaded model."""
    with _CACHES_LOCK:
        return _CACHES.setdefault(model, EmbeddingCache())


def slice_key(image: np.ndarray) -> str:
    """A digest of a slice's shape, dtype and pixels (about 1 ms per megabyte)."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(f"{image.shape}{image.dtype}".encode())
    digest.update(np.ascontiguousarray(image).data)
    return digest.hexdigest()


def _check_promptable(model: LoadedModel) -> None:
    if not isinstance(model, LoadedModel) or not model.adapter.supports_prompts:
        raise SlicewiseError(
            f"{model.name} does not take box or point prompts; use a promptable model such as lite_medsam."
        )


def embed(model: LoadedModel, image: np.ndarray) -> SliceEmbedding:
    """The slice's embedding, from the model's cache or computed (and cached) now.

    image: (H, W) or (H, W, C), any integer or float dtype; never mutated.
    """
    _check_promptable(model)
    cache = embedding_cache(model)
    key = slice_key(image)
    cached = cache.get(key)
    if cached is not None:
        return cached
    height, width = image.shape[:2]
    batch = torch.from_numpy(prepare(image, model.spec.input)).unsqueeze(0).to(model.device)

    def run(batch: torch.Tensor) -> list[torch.Tensor]:
        with torch.inference_mode(), autocast_for(model):
            return [model.adapter.embed(model.inference_module, batch)]

    encoder = shared_encoder(model)
    features = FEATURES.encoded(encoder, batch, run)[0].to(model.device) if encoder else run(batch)[0]
    size = model.spec.input.size
    scale = 1.0 if size is None else size / max(height, width)
    embedding = SliceEmbedding(features, height, width, network_shape(height, width, size), scale)
    cache.put(key, embedding)
    return embedding


def _frame_box(box: Box, embedding: SliceEmbedding) -> Box:
    """The box clipped to the slice, in network-frame pixels; a box off the slice is an error."""
    x0, y0, x1, y1 = box
    clipped = (max(x0, 0.0), max(y0, 0.0), min(x1, embedding.width - 1.0), min(y1, embedding.height - 1.0))
    if clipped[0] >= clipped[2] or clipped[1] >= clipped[3]:
        raise SlicewiseError(
            f"The box ({x0:.0f}, {y0:.0f})–({x1:.0f}, {y1:.0f}) does not overlap the {embedding.width}×"
            f"{embedding.height} slice; draw it around the object on the viewed slice."
        )
    return tuple(v * embedding.scale for v in clipped)


def _check_kinds(model: LoadedModel, prompt: Prompt) -> None:
    kinds = model.adapter.prompt_kinds
    if prompt.points and "points" not in kinds or prompt.box is not None and "box" not in kinds:
        raise SlicewiseError(
            f"{model.name} takes {' and '.join(kinds)} prompts only (it was trained with them); "
            f"draw a {kinds[0]} instead."
        )


def decode(model: LoadedModel, embedding: SliceEmbedding, prompt: Prompt) -> torch.Tensor:
    """(2, H, W) float32 probabilities (background, object) on the slice for one prompt."""
    _check_promptable(model)
    _check_kinds(model, prompt)
    device = model.device
    box = None if prompt.box is None else torch.tensor([_frame_box(prompt.box, embedding)], device=device)
    points = labels = None
    if prompt.points:
        scaled = [(x * embedding.scale, y * embedding.scale) for x, y in prompt.points]
        points = torch.tensor([scaled], dtype=torch.float32, device=device)
        labels = torch.tensor([prompt.point_labels], dtype=torch.int64, device=device)
    with torch.inference_mode(), autocast_for(model):
        logits = model.adapter.decode(
            model.module, embedding.features, box=box, points=points, point_labels=labels
        ).float()
    probabilities = probabilities_from_logits(logits, model.spec.output.activation)[0]
    return to_slice(probabilities, embedding.height, embedding.width, embedding.inner)


def iter_predict_prompts(
    model: LoadedModel,
    image: np.ndarray,
    prompts: Sequence[Prompt],
    *,
    slice_ref: SliceRef | None = None,
    uncertainty: str | None = None,
) -> Generator[Progress, None, Prediction]:
    """Segment the objects ``prompts`` mark on one slice, as one proposal; a cached slice skips
    the encoder, and each prompt costs one decode.

    image: (H, W) or (H, W, C). Returns labels (H, W) uint8 (1 = object) and probabilities
    (2, H, W), a pixel's object probability the highest any prompt gives it;
    ``uncertainty="entropy"`` adds the normalised entropy map and its slice score (sampling
    methods need several forwards of a dense model and are refused).
    """
    _check_promptable(model)
    if not prompts:
        raise SlicewiseError("There is no prompt on this slice; draw a box around the object.")
    for prompt in prompts:
        _check_kinds(model, prompt)
    if uncertainty not in (None, "entropy"):
        raise SlicewiseError(
            f"Prompted predictions offer entropy uncertainty only, not {uncertainty}; choose entropy or none."
        )
    started = time.perf_counter()
    yield Progress(0, 2, "embed")
    embedding = embed(model, image)
    yield Progress(1, 2, "decode")
    foreground = torch.stack([decode(model, embedding, prompt)[1] for prompt in prompts]).amax(0)
    on_slice = torch.stack([1 - foreground, foreground])
    entropy = None if uncertainty is None else normalized_entropy(on_slice)
    probabilities = np.ascontiguousarray(on_slice.cpu().numpy())
    return Prediction(
        labels=probabilities.argmax(0).astype(np.uint8),
        probabilities=probabilities,
        class_names=model.spec.output.class_names,
        model_name=model.name,
        device=model.device.type,
        slice_ref=slice_ref or SliceRef(),
        seconds=time.perf_counter() - started,
        uncertainty=None if entropy is None else np.ascontiguousarray(entropy.cpu().numpy()),
        uncertainty_score=None if entropy is None else slice_score(entropy),
    )


def predict_prompts(
    model: LoadedModel,
    image: np.ndarray,
    prompts: Sequence[Prompt],
    *,
    slice_ref: SliceRef | None = None,
    uncertainty: str | None = None,
) -> Prediction:
    """Run ``iter_predict_prompts`` to the end."""
    return run_to_end(iter_predict_prompts(model, image, prompts, slice_ref=slice_ref, uncertainty=uncertainty))


def box_from_mask(mask: np.ndarray, *, margin: float = 0.05) -> Box | None:
    """The box around a mask's pixels, widened by ``margin`` of its size on each side (None if empty)."""
    rows, cols = np.nonzero(mask)
    if rows.size == 0:
        return None
    return widened_box((int(rows.min()), int(rows.max())), (int(cols.min()), int(cols.max())), margin)


@dataclass(frozen=True)
class Appearance:
    """How an object looks on a slice: the mean and spread of its intensity, and how much it
    stands out from a thin ring around it (in units of that spread, signed)."""

    mean: float
    spread: float
    contrast: float

    @classmethod
    def of(cls, image: np.ndarray, mask: np.ndarray, *, ring: int = 3) -> Appearance:
        """image: (H, W) or (H, W, C) (channels averaged); mask: (H, W) bool, not empty."""
        gray = np.asarray(image, dtype=np.float32)
        gray = gray.mean(-1) if gray.ndim == 3 else gray
        inside = gray[mask]
        around = gray[binary_dilation(mask, iterations=ring) & ~mask]
        spread = float(inside.std()) or 1.0
        contrast = float(inside.mean() - around.mean()) / spread if around.size else 0.0
        return cls(float(inside.mean()), spread, contrast)


@dataclass(frozen=True)
class PropagationRule:
    """When propagation stops. A box always finds *something*, so a proposal must also look like
    the object on the start slice: its mean intensity within ``max_shift`` spreads of the object's,
    and standing out from its surroundings at least ``min_contrast`` as much, in the same direction.
    It also stops when fewer than ``min_pixels`` are left or the area jumps above ``max_growth``
    times the slice before (a leak)."""

    min_pixels: int = 10
    max_growth: float = 3.0
    max_shift: float = 1.1
    min_contrast: float = 0.25

    def keeps(self, appearance: Appearance, reference: Appearance, area: int, previous: int) -> bool:
        """Whether a proposal of ``area`` px that looks like ``appearance`` still is the ``reference`` object."""
        if area < self.min_pixels or area > self.max_growth * previous:
            return False
        shift = abs(appearance.mean - reference.mean) / reference.spread
        return shift <= self.max_shift and appearance.contrast * np.sign(reference.contrast) >= self.min_contrast * abs(
            reference.contrast
        )


def iter_propagate(
    model: LoadedModel,
    stack: np.ndarray,
    *,
    start: int,
    mask: np.ndarray,
    rgb: bool = False,
    rule: PropagationRule | None = None,
) -> Generator[Prediction, None, int]:
    """Prompt the slices after and before ``start`` of a 3D stack with the box of the mask next to
    them, one slice at a time, until the object disappears (``rule``); yield each slice's Prediction.

    stack: (Z, H, W[, C]); mask: (H, W), the object on slice ``start``. Returns how many slices
    were proposed.
    """
    _check_promptable(model)
    rule = rule or PropagationRule()
    depth = stack.shape[0]
    if not 0 <= start < depth:
        raise SlicewiseError(f"Slice {start} is outside the stack of {depth} slices.")
    if not np.any(mask):
        raise SlicewiseError(f"Slice {start} holds no object to propagate; accept or paint one there first.")
    reference = Appearance.of(take_slice(stack, SliceRef((start,)), rgb=rgb), np.asarray(mask) != 0)
    proposed = 0
    for step in (1, -1):
        previous = np.asarray(mask) != 0
        index = start + step
        while 0 <= index < depth:
            ref = SliceRef((index,))
            plane = take_slice(stack, ref, rgb=rgb)
            prediction = predict_prompts(model, plane, [Prompt(box=box_from_mask(previous))], slice_ref=ref)
            current = prediction.labels != 0
            area = int(current.sum())
            if area == 0 or not rule.keeps(Appearance.of(plane, current), reference, area, int(previous.sum())):
                break
            yield prediction
            proposed += 1
            previous, index = current, index + step
    return proposed
