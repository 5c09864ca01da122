"""Export a trained run as a plugin-ready checkpoint with its measured test metrics."""

from __future__ import annotations

from pathlib import Path

from slicewise.models.checkpoint import load_checkpoint, save_checkpoint
from slicewise_train.evaluate import Evaluation, evaluate


def export(
    checkpoint: str | Path, out: str | Path, evaluate_on: list[str | Path], *, use: str | None = None
) -> tuple[Path, list[Evaluation]]:
    """Evaluate ``checkpoint`` on each dataset's test split and write it to ``out`` with the figures.

    The first dataset is the one it was trained on; the others are cross-dataset figures.
    ``use``: one line on when to choose this model (e.g. fast enough to follow the slice, or
    the accurate one), which ``slicewise models`` and the dock show beside its figures.
    """
    header, state = load_checkpoint(checkpoint)
    evaluations = [evaluate(checkpoint, data, "test") for data in evaluate_on]
    metrics = dict(header.provenance.get("metrics", {}))
    for evaluation in evaluations:
        metrics[f"test_dice_{evaluation.dataset}"] = round(evaluation.pooled_dice, 4)
        metrics[f"test_mean_dice_{evaluation.dataset}"] = round(evaluation.mean_dice, 4)
    provenance = {**header.provenance, "metrics": metrics, **({"use": use} if use else {})}
    return save_checkpoint(out, state, header.spec, provenance), evaluations
