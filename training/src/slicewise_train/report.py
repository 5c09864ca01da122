"""One report folder per run or protocol: ``metrics.json``, ``report.md`` and PNG plots.

The plots are the study's and more: pooled Dice per model and dataset, per-image Dice
distributions, the worst test images as overlays (reference green, prediction red) and
Grad-CAM of the same worst cases, computed through slicewise's own explanation path.
Models are compared image by image with the Wilcoxon signed-rank test.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from scipy.stats import wilcoxon  # noqa: E402
from skimage.segmentation import find_boundaries  # noqa: E402

import slicewise  # noqa: E402
from slicewise.models.checkpoint import read_header  # noqa: E402
from slicewise.models.registry import get_adapter  # noqa: E402
from slicewise_train.data import load_stems  # noqa: E402
from slicewise_train.evaluate import Evaluation  # noqa: E402

WORST_CASES = 4


@dataclass(frozen=True)
class RunResult:
    """A trained model and its evaluations: the first on its own test split, then cross-dataset."""

    model: str
    data_root: Path
    checkpoint: Path
    evaluations: list[Evaluation]
    training: dict[str, Any] = field(default_factory=dict)

    @property
    def trained_on(self) -> str:
        return self.data_root.name

    @cached_property
    def kind(self) -> str:
        """The kind, "SMA" or "GP-VM", from the checkpoint's architecture."""
        return get_adapter(read_header(self.checkpoint).spec.arch).kind

    @property
    def in_domain(self) -> Evaluation:
        return self.evaluations[0]

    def summary(self) -> dict[str, Any]:
        header = read_header(self.checkpoint)
        return {
            "model": self.model,
            "arch": header.spec.arch,
            "kind": self.kind,
            "trained_on": self.trained_on,
            "checkpoint": str(self.checkpoint),
            "pretrained": header.provenance.get("config", {}).get("pretrained"),
            "input_size": header.spec.input.size,
            **{k: self.training.get(k) for k in ("learning_rate", "lr_grid", "best_epoch", "epochs_run", "seed")},
            "train_seconds": round(self.training["history"][-1]["seconds"], 1)
            if self.training.get("history")
            else None,
            "evaluations": [e.as_dict(with_images=True) for e in self.evaluations],
        }


def comparisons(results: Sequence[RunResult]) -> list[dict[str, Any]]:
    """Paired per-image Dice of every two models trained and tested on the same data (Wilcoxon)."""
    rows = []
    by_split: dict[tuple[str, str], list[tuple[str, dict[str, float]]]] = {}
    for result in results:
        for evaluation in result.evaluations:
            key = (result.trained_on, evaluation.dataset)
            by_split.setdefault(key, []).append((result.model, evaluation.per_image()))
    for (trained_on, tested_on), models in by_split.items():
        for (name_a, dice_a), (name_b, dice_b) in itertools.combinations(models, 2):
            stems = sorted(dice_a)
            a = np.array([dice_a[s] for s in stems])
            b = np.array([dice_b[s] for s in stems])
            differences = a - b
            p_value = 1.0 if not np.any(differences) else float(wilcoxon(a, b).pvalue)
            rows.append(
                {
                    "trained_on": trained_on,
                    "tested_on": tested_on,
                    "a": name_a,
                    "b": name_b,
                    "mean_dice_a": round(float(a.mean()), 4),
                    "mean_dice_b": round(float(b.mean()), 4),
                    "median_difference": round(float(np.median(differences)), 4),
                    "images": len(stems),
                    "p_value": p_value,
                }
            )
    return rows


def cross_dataset_matrices(results: Sequence[RunResult]) -> dict[str, dict[str, dict[str, float]]]:
    """model → trained-on → tested-on → pooled Dice, for every run evaluated on more than one dataset."""
    matrices: dict[str, dict[str, dict[str, float]]] = {}
    for result in results:
        if len(result.evaluations) > 1:
            row = {e.dataset: round(e.pooled_dice, 4) for e in result.evaluations}
            matrices.setdefault(result.model, {})[result.trained_on] = row
    return matrices


def write_report(out: Path, results: Sequence[RunResult], *, title: str, settings: list[dict[str, Any]]) -> Path:
    """Write ``metrics.json``, ``report.md`` and the plots into ``out``; returns the markdown file."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "plots").mkdir(exist_ok=True)
    compared = comparisons(results)
    matrices = cross_dataset_matrices(results)
    metrics = {
        "title": title,
        "settings": settings,
        "runs": [r.summary() for r in results],
        "cross_dataset": matrices,
        "comparisons": compared,
    }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1))
    plots = [_bar_plot(out, results), _distribution_plot(out, results)]
    worst = [_worst_cases(out, result) for result in results]
    lines = [f"# {title}", "", "## Settings", "", *_settings_table(settings), ""]
    lines += ["## Test results", "", *_results_table(results), ""]
    lines += [
        "Dice, IoU, precision and recall are pooled over every pixel of the test split with background "
        "excluded (the study's convention); *mean Dice* averages per image. HD95 (pixels) and NSD "
        "(2-pixel tolerance) are per-image means from MONAI's metrics, at each image's own resolution.",
        "",
    ]
    if matrices:
        lines += ["## Cross-dataset Dice (pooled; rows: trained on, columns: tested on)", ""]
        for model, matrix in matrices.items():
            lines += [f"**{model}**", "", *_matrix_table(matrix), ""]
    if compared:
        lines += ["## Paired comparisons (per-image Dice, Wilcoxon signed-rank)", "", *_comparison_table(compared), ""]
    lines += ["## Plots", ""] + [f"![{p.stem}](plots/{p.name})" for p in plots] + [""]
    lines += ["## Worst test cases (reference green, prediction red) and their Grad-CAM", ""]
    lines += [f"![{p.stem}](plots/{p.name})" for p in worst if p is not None]
    report = out / "report.md"
    report.write_text("\n".join(lines) + "\n")
    return report


def _settings_table(settings: list[dict[str, Any]]) -> list[str]:
    keys = sorted({k for row in settings for k in row if k not in ("name", "arch")})
    head = ["model", "arch", *keys]
    rows = [
        [
            str(row.get("name", "")),
            str(row.get("arch", "")),
            *(json.dumps(row[k]) if k in row else "default" for k in keys),
        ]
        for row in settings
    ]
    return _table(head, rows)


def _results_table(results: Sequence[RunResult]) -> list[str]:
    head = [
        "model",
        "kind",
        "trained on",
        "tested on",
        "Dice",
        "mean Dice",
        "IoU",
        "HD95",
        "NSD",
        "precision",
        "recall",
        "lr",
    ]
    rows = []
    for result in results:
        for e in result.evaluations:
            d = e.as_dict()
            rows.append(
                [
                    result.model,
                    result.kind,
                    result.trained_on,
                    e.dataset,
                    f"{d['dice']:.3f}",
                    f"{d['per_image_mean']['dice']:.3f}",
                    f"{d['iou']:.3f}",
                    f"{d['hd95']:.1f}",
                    f"{d['nsd']:.3f}",
                    f"{d['precision']:.3f}",
                    f"{d['recall']:.3f}",
                    f"{result.training.get('learning_rate', '')}",
                ]
            )
    return _table(head, rows)


def _matrix_table(matrix: dict[str, dict[str, float]]) -> list[str]:
    columns = sorted({c for row in matrix.values() for c in row})
    return _table(
        ["trained on ↓ / tested on →", *columns],
        [[r, *(f"{matrix[r].get(c, float('nan')):.3f}" for c in columns)] for r in matrix],
    )


def _comparison_table(rows: list[dict[str, Any]]) -> list[str]:
    head = ["trained on", "tested on", "A", "B", "mean Dice A", "mean Dice B", "median A−B", "n", "p (Wilcoxon)"]
    body = [
        [
            r["trained_on"],
            r["tested_on"],
            r["a"],
            r["b"],
            f"{r['mean_dice_a']:.3f}",
            f"{r['mean_dice_b']:.3f}",
            f"{r['median_difference']:+.3f}",
            str(r["images"]),
            f"{r['p_value']:.2g}",
        ]
        for r in rows
    ]
    return _table(head, body)


def _table(head: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)] + ["| " + " | ".join(r) + " |" for r in rows]


def _bar_plot(out: Path, results: Sequence[RunResult]) -> Path:
    """Pooled test Dice of every model, grouped by the dataset it was trained and tested on."""
    pairs = sorted({(r.trained_on, e.dataset) for r in results for e in r.evaluations})
    models = list(dict.fromkeys(r.model for r in results))
    width = 0.8 / max(1, len(models))
    figure, axis = plt.subplots(figsize=(max(6, 1.6 * len(pairs) + 2), 4))
    for index, model in enumerate(models):
        values = []
        for trained_on, tested_on in pairs:
            found = [
                e.pooled_dice
                for r in results
                if r.model == model and r.trained_on == trained_on
                for e in r.evaluations
                if e.dataset == tested_on
            ]
            values.append(found[0] if found else np.nan)
        axis.bar(np.arange(len(pairs)) + index * width, values, width, label=model)
    axis.set_xticks(np.arange(len(pairs)) + width * (len(models) - 1) / 2)
    axis.set_xticklabels([a if a == b else f"{a}\n→ {b}" for a, b in pairs], fontsize=8)
    axis.set_ylabel("pooled test Dice")
    axis.set_ylim(0, 1)
    axis.legend(fontsize=8, loc="lower right")
    axis.set_title("Test Dice per model (trained on → tested on)")
    return _save(figure, out / "plots" / "dice_bars.png", dpi=110)


def _distribution_plot(out: Path, results: Sequence[RunResult]) -> Path:
    """Per-image Dice on each model's own test split, one box per model and dataset."""
    datasets = list(dict.fromkeys(r.trained_on for r in results))
    figure, axes = plt.subplots(1, len(datasets), figsize=(4.2 * len(datasets), 4), squeeze=False)
    for axis, dataset in zip(axes[0], datasets, strict=True):
        runs = [r for r in results if r.trained_on == dataset]
        axis.boxplot([list(r.in_domain.per_image().values()) for r in runs], showmeans=True)
        axis.set_xticks(range(1, len(runs) + 1))
        axis.set_xticklabels([r.model for r in runs], rotation=30, ha="right", fontsize=8)
        axis.set_title(dataset)
        axis.set_ylim(0, 1)
        axis.set_ylabel("per-image Dice")
    return _save(figure, out / "plots" / "dice_per_image.png", dpi=110)


def _worst_cases(out: Path, result: RunResult) -> Path | None:
    """The run's worst in-domain test images: overlay (reference green, prediction red) over Grad-CAM."""
    evaluation = result.in_domain
    dice = evaluation.per_image()
    stems = sorted(dice, key=dice.get)[:WORST_CASES]
    if not stems:
        return None
    model = slicewise.load_model(result.checkpoint, device="cpu")
    samples = load_stems(result.data_root, stems)
    figure, axes = plt.subplots(2, len(samples), figsize=(3 * len(samples), 6), squeeze=False)
    for column, sample in enumerate(samples):
        prediction = slicewise.predict(model, sample.image, explain="gradcam", target_class=1)
        image = sample.image if sample.image.ndim == 3 else np.stack([sample.image] * 3, axis=-1)
        overlay = image.astype(np.float32) / max(1, image.max())
        overlay[find_boundaries(sample.mask > 0, mode="thick")] = (0, 1, 0)
        overlay[find_boundaries(prediction.labels > 0, mode="thick")] = (1, 0, 0)
        axes[0, column].imshow(overlay)
        axes[0, column].set_title(f"{sample.stem}\nDice {dice[sample.stem]:.2f}", fontsize=8)
        axes[1, column].imshow(image)
        axes[1, column].imshow(prediction.explanation, cmap="jet", alpha=0.45)
        axes[1, column].set_title("Grad-CAM (class 1)", fontsize=8)
        for axis in axes[:, column]:
            axis.axis("off")
    figure.suptitle(f"{result.model} on {evaluation.dataset}: worst test images", fontsize=10)
    return _save(figure, out / "plots" / f"worst_{result.model}__{result.trained_on}.png", dpi=100)


def _save(figure: plt.Figure, path: Path, *, dpi: int) -> Path:
    figure.tight_layout()
    figure.savefig(path, dpi=dpi)
    plt.close(figure)
    return path
