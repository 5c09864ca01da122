"""The review queue: visit the slices of a stack from the least to the most certain.

``iter_rank_slices`` predicts every slice with an uncertainty method and yields each
``Prediction`` as it goes (so the caller can show them); ``ReviewQueue`` then hands out the
most uncertain slice not yet reviewed.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass, field
from typing import Any

from slicewise.core.inference import predict
from slicewise.core.slices import take_slice
from slicewise.core.types import Prediction, PredictOptions, SliceRef
from slicewise.errors import ImageError
from slicewise.models.loaded import Ensemble, LoadedModel


def stack_refs(shape: tuple[int, ...], rgb: bool) -> list[SliceRef]:
    """Every slice of a 3D stack (Z, H, W[, C]); a 2D image has nothing to rank."""
    spatial = len(shape) - (1 if rgb else 0)
    if spatial != 3:
        raise ImageError(f"Ranking slices needs a 3D stack (Z, H, W), got an image of shape {shape}.")
    return [SliceRef((z,)) for z in range(shape[0])]


def iter_rank_slices(
    model: LoadedModel | Ensemble, stack: Any, *, rgb: bool = False, uncertainty: str = "entropy"
) -> Generator[Prediction, None, list[tuple[SliceRef, float]]]:
    """Predict each slice (yielding its Prediction) and return (slice, score), most uncertain first."""
    scores = []
    for ref in stack_refs(tuple(stack.shape), rgb):
        options = PredictOptions(slice_ref=ref, uncertainty=uncertainty)
        prediction = predict(model, take_slice(stack, ref, rgb=rgb), options)
        scores.append((ref, float(prediction.uncertainty_score)))
        yield prediction
    return sorted(scores, key=lambda item: item[1], reverse=True)


@dataclass
class ReviewQueue:
    """Slices ranked by uncertainty and the ones a person has already visited."""

    ranking: list[tuple[SliceRef, float]]
    reviewed: set[SliceRef] = field(default_factory=set)

    def next(self) -> tuple[SliceRef, float] | None:
        """The most uncertain slice not yet reviewed (now marked reviewed), or None when done."""
        for ref, score in self.ranking:
            if ref not in self.reviewed:
                self.reviewed.add(ref)
                return ref, score
        return None

    @property
    def remaining(self) -> int:
        return sum(ref not in self.reviewed for ref, _ in self.ranking)
