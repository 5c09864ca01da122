"""Export a trained run as a plugin-ready checkpoint with its measured test metrics."""

from __future__ import annotations

from pathlib import Path

from slicewise.models.checkpoint import load_checkpoint, save_checkpoint
from slicewise_train.evaluate import Evaluation, evaluate


def export(checkpoint: str | Path, out: str | Path, evaluate_on: list[str | Path]) -> tuple[Path, list[Evaluation]]:
    """Evaluate ``checkpoint`` on each dataset's test split and write it to ``out`` with the figures.

    The first dataset is the one it was trained on; the others are cross-dataset figures.
    """
    header, state = load_checkpoint(checkpoint)
    evaluations = [evaluate(checkpoint, data, "test") for data in evaluate_on]
    metrics = dict(header.provenance.get("metrics", {}))
    for evaluation in evaluations:
        metrics[f"test_dice_{evaluation.dataset}"] = round(evaluation.pooled_dice, 4)
        metrics[f"test_mean_dice_{evaluation.dataset}"] = round(evaluation.mean_dice, 4)
    provenance = {**header.provenance, "metrics": metrics}
    return save_checkpoint(out, state, header.spec, provenance), evaluations
