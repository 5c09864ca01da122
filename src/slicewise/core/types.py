"""Frozen value types that flow between the core and its faces (widget, CLI, training)."""

from __future__ import annotations

from dataclasses import dataclass, field
from numbers import Integral

import numpy as np

from slicewise.errors import OptionError, printable


@dataclass(frozen=True)
class SliceRef:
    """Which 2D slice of an array: indices of the leading (non-plane) axes, e.g. ``(z,)``.

    The plane is the last two spatial axes; an RGB(A) channel axis, if any, comes last.
    ``()`` is the whole 2D image.
    """

    index: tuple[int, ...] = ()

    def describe(self) -> str:
        """A short human label such as ``"slice 12"`` or ``"slice (3, 12)"``."""
        if not self.index:
            return "2D"
        return f"slice {self.index[0]}" if len(self.index) == 1 else f"slice {self.index}"


UNCERTAINTY_METHODS = ("entropy", "tta", "mc_dropout")
EXPLAIN_METHODS = ("gradcam", "saliency", "occlusion")
DEFAULT_TILE_SIZE = 1024


@dataclass(frozen=True)
class PredictOptions:
    """What to compute besides labels and probabilities.

    uncertainty: None, "entropy" (of the class probabilities; free), "tta" (flips and 90°
    rotations, batched; entropy of the averaged prediction) or "mc_dropout" (dropout kept on,
    several samples; mutual information, the epistemic part).
    explain: None, "gradcam", "saliency" or "occlusion" (see ``slicewise.core.explain``), for
    ``target_class`` (default: the most frequent predicted foreground class, else 1).
    tile_size: a prepared slice with a side longer than this runs in overlapping square tiles of
    this side (MONAI's sliding window, Gaussian blending; see ``slicewise.core.tiling``); None
    runs every slice in one forward, however large.
    """

    slice_ref: SliceRef = field(default_factory=SliceRef)
    uncertainty: str | None = None
    explain: str | None = None
    target_class: int | None = None
    tile_size: int | None = DEFAULT_TILE_SIZE

    def __post_init__(self) -> None:
        if self.uncertainty is not None and self.uncertainty not in UNCERTAINTY_METHODS:
            raise OptionError(
                f"Unknown uncertainty {printable(self.uncertainty)[:40]!r}; choose one of "
                f"{', '.join(UNCERTAINTY_METHODS)} or None."
            )
        if self.explain is not None and self.explain not in EXPLAIN_METHODS:
            raise OptionError(
                f"Unknown explanation {printable(self.explain)[:40]!r}; choose one of "
                f"{', '.join(EXPLAIN_METHODS)} or None."
            )
        if self.tile_size is not None and (
            not isinstance(self.tile_size, Integral) or isinstance(self.tile_size, bool) or self.tile_size < 16
        ):
            raise OptionError(
                f"tile_size must be None or a whole number of at least 16 px, got {printable(self.tile_size)[:40]}."
            )
        if self.target_class is not None and (
            not isinstance(self.target_class, Integral) or isinstance(self.target_class, bool)
        ):
            raise OptionError(
                f"target_class must be a class index (an integer), got {printable(self.target_class)[:40]}."
            )


@dataclass(frozen=True)
class Progress:
    """One step of a prediction, for progress bars: ``step`` of ``total`` in ``stage``."""

    step: int
    total: int
    stage: str


@dataclass(frozen=True, eq=False)
class Prediction:
    """The result for one slice.

    labels: (H, W) uint8 class index per pixel (0 = background).
    probabilities: (K, H, W) float32 class probabilities, summing to 1 over K.
    """

    labels: np.ndarray
    probabilities: np.ndarray
    class_names: tuple[str, ...]
    model_name: str
    device: str
    slice_ref: SliceRef = field(default_factory=SliceRef)
    seconds: float = 0.0
    uncertainty: np.ndarray | None = None  # (H, W) float32 in [0, 1], higher = less certain
    uncertainty_score: float | None = None  # one number per slice, for ranking slices to review
    explanation: np.ndarray | None = None  # (H, W) float32 in [0, 1], aligned with the slice
    target_class: int | None = None  # the class the explanation is for
