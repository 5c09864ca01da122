"""The review queue: visit the slices of a stack worst first.

``iter_rank_slices`` predicts every slice with an uncertainty method and yields each
``Prediction`` as it goes (so the caller can show them), ranking by uncertainty; ``rank_by_map``
ranks by an errors map (a prediction against reference labels) or a disagreement map (model A
against model B), both from ``core.evaluation``, by how much the two sides differ on each slice.
``ReviewQueue`` then hands out the worst slice not yet reviewed.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass, field
from typing import Any

from slicewise.core.evaluation import agreement_dice
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


def rank_by_map(comparison: Any) -> list[tuple[SliceRef, float]]:
    """The slices of a (Z, H, W) errors or disagreement map (``core.evaluation.disagreement``) ranked by
    1 − the Dice between its two sides on the slice, most different first (0 where neither has anything)."""
    refs = stack_refs(tuple(comparison.shape), False)
    scores = [(ref, 1.0 - agreement_dice(take_slice(comparison, ref))) for ref in refs]
    return sorted(scores, key=lambda item: item[1], reverse=True)


@dataclass
class ReviewQueue:
    """Slices ranked worst first (by uncertainty, error or disagreement) and the ones a person has visited."""

    ranking: list[tuple[SliceRef, float]]
    reviewed: set[SliceRef] = field(default_factory=set)

    def next(self) -> tuple[SliceRef, float] | None:
        """The worst slice not yet reviewed (now marked reviewed), or None when done."""
        for ref, score in self.ranking:
            if ref not in self.reviewed:
                self.reviewed.add(ref)
                return ref, score
        return None

    @property
    def remaining(self) -> int:
        return sum(ref not in self.reviewed for ref, _ in self.ranking)

    def place(self, ref: SliceRef) -> tuple[int, float] | None:
        """A slice's rank (1 = worst) and score, or None if it was not ranked."""
        return next(((i, score) for i, (r, score) in enumerate(self.ranking, start=1) if r == ref), None)
