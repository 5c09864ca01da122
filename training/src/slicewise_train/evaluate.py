"""Evaluate a checkpoint on a split through slicewise's own prediction path (what the widget runs)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

import slicewise
from slicewise.errors import SlicewiseError
from slicewise_train.data import load_split, manifest_entry
from slicewise_train.metrics import NSD_TOLERANCE_PX, Counts, SplitScores, image_scores, split_scores


@dataclass(frozen=True)
class Evaluation:
    """One model on one split: pooled and per-image metrics (see ``slicewise_train.metrics``)."""

    model: str
    dataset: str
    split: str
    scores: SplitScores

    @property
    def pooled_dice(self) -> float:
        return self.scores.pooled["dice"]

    @property
    def mean_dice(self) -> float:
        return self.scores.per_image_mean["dice"]

    def per_image(self, metric: str = "dice") -> dict[str, float]:
        return {stem: scores[metric] for stem, scores in self.scores.per_image.items()}

    def record(self) -> dict[str, Any]:
        """Every figure unrounded, as JSON values (``from_record`` reads it back)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Evaluation:
        return cls(**{**record, "scores": SplitScores(**record["scores"])})

    def as_dict(self, *, with_images: bool = False) -> dict[str, Any]:
        """Headline figures first: overlap pooled over the split, HD95 and NSD as per-image means."""
        pooled, means = self.scores.pooled, self.scores.per_image_mean
        result: dict[str, Any] = {
            "model": self.model,
            "dataset": self.dataset,
            "split": self.split,
            "images": len(self.scores.per_image),
            **{key: round(pooled[key], 4) for key in ("dice", "iou", "precision", "recall")},
            "hd95": round(means["hd95"], 2),
            "nsd": round(means["nsd"], 4),
            "pooled": {key: round(value, 4) for key, value in pooled.items()},
            "per_image_mean": {key: round(value, 4) for key, value in means.items()},
            "units": {"hd95": "pixels", "nsd_tolerance": f"{NSD_TOLERANCE_PX:g} pixels"},
        }
        if with_images:
            result["per_image"] = {
                stem: {k: round(v, 4) for k, v in scores.items()} for stem, scores in self.scores.per_image.items()
            }
        return result


def evaluate(model: slicewise.LoadedModel | str | Path, data: str | Path, split: str = "test") -> Evaluation:
    """Predict every image of ``split`` with ``slicewise.predict`` and score it against its mask."""
    model = model if isinstance(model, slicewise.LoadedModel) else slicewise.load_model(model)
    num_classes = model.spec.output.num_classes
    samples = load_split(data, split)
    found = max(int(s.mask.max()) for s in samples) + 1
    declared = manifest_entry(data).get("classes")
    classes = len(declared) if isinstance(declared, dict | list) and declared else found
    if max(found, classes) > num_classes or classes < num_classes:
        raise SlicewiseError(
            f"{Path(data).name} has {max(found, classes)} classes but {model.name} predicts {num_classes} "
            f"({', '.join(model.spec.output.class_names)}); evaluate it on a dataset of its task."
        )
    per_image: dict[str, dict[str, float]] = {}
    counts = Counts(0, 0, 0)
    for sample in tqdm(samples, desc=f"{model.name} on {Path(data).name}/{split}", leave=False, disable=None):
        labels = slicewise.predict(model, sample.image).labels
        per_image[sample.stem], image_counts = image_scores(labels, sample.mask, num_classes)
        counts = counts + image_counts
    return Evaluation(model=model.name, dataset=Path(data).name, split=split, scores=split_scores(per_image, counts))
