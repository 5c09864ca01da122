"""Evaluate predictions against reference labels slice by slice, and compare two predictions.

``iter_evaluate`` scores a prediction source — a loaded model (which predicts each slice that is
needed through ``core.inference``) or a labels array (a person's labels, another tool's output) —
against a reference labels array of a 2D image or a 3D stack, slice by slice and class by class:
Dice, IoU, precision and recall from pixel counts, HD95 and NSD from MONAI in the units of the
spacing (pixels when there is none), all from ``core.metrics``. It yields ``Progress`` (so the
widget can cancel between slices) and returns an ``Evaluation``: the per-slice table, each slice's
figure (the mean over the classes present, as the study reports per image) and the pooled and
mean figures over the slices. ``compare`` pairs two evaluations over the same slices (Wilcoxon
signed-rank on per-slice Dice, as the training report does) and orders the slices by how much
the two differ; ``disagreement`` maps where two label maps differ (A only, B only, both).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import math
import os
import warnings
from collections.abc import Generator, Iterable, Sequence
from dataclasses import dataclass, field
from itertools import product
from pathlib import Path
from typing import Any

import numpy as np

from slicewise.core.metrics import (
    METRICS,
    NO_COUNTS,
    Counts,
    class_scores,
    default_tolerance,
    mean_over_classes,
)
from slicewise.core.slices import spatial_ndim, take_slice
from slicewise.core.types import PredictOptions, Progress, SliceRef
from slicewise.errors import ImageError, printable
from slicewise.models.loaded import Ensemble, LoadedModel

PIXELS = "px"
# the disagreement map's values (0: neither); "both" is the same class in both
A_ONLY, B_ONLY, BOTH, OTHER_CLASS = 1, 2, 3, 4
DISAGREEMENT_NAMES = {A_ONLY: "A only", B_ONLY: "B only", BOTH: "both", OTHER_CLASS: "both, another class"}
DISAGREEMENT_COLOURS = {A_ONLY: "orange", B_ONLY: "dodgerblue", BOTH: "lime", OTHER_CLASS: "magenta"}


@dataclass(frozen=True)
class Row:
    """One foreground class on one slice: its scores and pixel counts."""

    slice_ref: SliceRef
    cls: int
    class_name: str
    scores: dict[str, float]
    counts: Counts

    @property
    def present(self) -> bool:
        """Whether the class is in the reference or the prediction on this slice."""
        return not self.counts.empty


@dataclass(frozen=True, eq=False)
class Evaluation:
    """One prediction source against one reference, over some slices.

    rows: one per slice and foreground class; per_slice: each slice's figure (the mean over the
    classes present; perfect when neither side has any); pooled: overlap from the summed counts;
    mean: every metric averaged over the slices. HD95 and the NSD ``tolerance`` are in ``unit``.
    labels: the predicted labels, reference-shaped (a model's: the evaluated slices filled in).
    """

    name: str
    reference: str
    class_names: tuple[str, ...]
    unit: str
    tolerance: float
    rows: tuple[Row, ...]
    per_slice: dict[SliceRef, dict[str, float]]
    pooled: dict[str, float]
    mean: dict[str, float]
    labels: np.ndarray | None = field(default=None, repr=False)
    slice_names: dict[SliceRef, str] = field(default_factory=dict)  # a merged folder: each image's file stem

    @property
    def slices(self) -> list[SliceRef]:
        return list(self.per_slice)

    def label(self, ref: SliceRef) -> str:
        """The slice as a table cell: a file's stem, ``"12"`` in a stack, ``"2D"`` for an image."""
        return self.slice_names.get(ref) or slice_label(ref)

    def table(self) -> tuple[list[str], list[tuple[SliceRef, tuple[Any, ...]]]]:
        """Columns and (slice, row) pairs of the per-slice, per-class table (without the model column)."""
        rows = [(row.slice_ref, values[1:]) for row, values in zip(self.rows, table_rows(self), strict=True)]
        return list(table_columns(self.unit)[1:]), rows

    def dice(self) -> dict[SliceRef, float]:
        """Each slice's Dice (the study's per-image figure)."""
        return {ref: scores["dice"] for ref, scores in self.per_slice.items()}

    def sentence(self) -> str:
        """One line: pooled overlap, mean distances, in the table's units."""
        pooled, mean = self.pooled, self.mean
        return (
            f"{self.name}: {len(self.per_slice)} {self._items()} against {self.reference}; "
            f"pooled Dice {pooled['dice']:.4f}, IoU {pooled['iou']:.4f}, "
            f"precision {pooled['precision']:.4f}, recall {pooled['recall']:.4f}; "
            f"mean Dice {mean['dice']:.4f}, HD95 {mean['hd95']:.2f} {self.unit}, "
            f"NSD {mean['nsd']:.4f} (within {self.tolerance:g} {self.unit})"
        )

    def _items(self) -> str:
        """What the rows are: images (a merged folder of 2D files) or slices."""
        files = self.slice_names and all(":" not in name for name in self.slice_names.values())
        return "images" if files else "slices"

    def summary(self) -> dict[str, Any]:
        """The headline figures as JSON values (what ``slicewise evaluate --json`` prints)."""
        return {
            "model": self.name,
            "reference": self.reference,
            "slices": len(self.per_slice),
            "units": {"hd95": self.unit, "nsd_tolerance": f"{self.tolerance:g} {self.unit}"},
            "pooled": {key: round(value, 4) for key, value in self.pooled.items()},
            "mean": {key: round(value, 4) for key, value in self.mean.items()},
        }


@dataclass(frozen=True, eq=False)
class Comparison:
    """Two evaluations paired over the slices both scored.

    dice_a, dice_b: per-slice Dice, in ``order`` (largest |Dice A − Dice B| first);
    p_value: two-sided Wilcoxon signed-rank over the slices (1.0 when they never differ, NaN
    with fewer than two slices); disagreement: ``disagreement(a.labels, b.labels)``.
    """

    a: Evaluation
    b: Evaluation
    order: tuple[SliceRef, ...]
    dice_a: tuple[float, ...]
    dice_b: tuple[float, ...]
    p_value: float
    disagreement: np.ndarray | None = field(default=None, repr=False)

    def summary(self) -> dict[str, Any]:
        """The comparison as JSON values: means, the p-value, the slices that differ most first."""
        return {
            "a": self.a.name,
            "b": self.b.name,
            "slices": len(self.order),
            "mean_dice_a": round(float(np.mean(self.dice_a)), 4),
            "mean_dice_b": round(float(np.mean(self.dice_b)), 4),
            "wilcoxon_p": None if math.isnan(self.p_value) else self.p_value,
            "most_different": [
                {"slice": self.a.label(ref), "dice_a": round(da, 4), "dice_b": round(db, 4)}
                for ref, da, db in list(zip(self.order, self.dice_a, self.dice_b, strict=True))[:10]
            ],
        }

    def table(self) -> tuple[list[str], list[tuple[SliceRef, tuple[Any, ...]]]]:
        """Columns and (slice, row) pairs: slice, Dice A, Dice B, |ΔDice|, in ``order``."""
        columns = ["slice", f"Dice {self.a.name}", f"Dice {self.b.name}", "|ΔDice|"]
        rows = [
            (ref, (self.a.label(ref), round(da, 4), round(db, 4), round(abs(da - db), 4)))
            for ref, da, db in zip(self.order, self.dice_a, self.dice_b, strict=True)
        ]
        return columns, rows

    def sentence(self) -> str:
        """E.g. ``"polyp_unet 0.84 vs my labels 0.79 mean Dice over 45 slices; Wilcoxon p = 0.012"``."""
        mean_a, mean_b = np.mean(self.dice_a), np.mean(self.dice_b)
        p = "needs two slices" if math.isnan(self.p_value) else f"p = {self.p_value:.3g}"
        return (
            f"{self.a.name} {mean_a:.3f} vs {self.b.name} {mean_b:.3f} mean Dice over {len(self.order)} "
            f"slices; Wilcoxon {p}"
        )


def slice_refs(shape: tuple[int, ...], *, rgb: bool = False) -> list[SliceRef]:
    """Every 2D slice of an array of ``shape``: ``[SliceRef()]`` for an image, one per plane of a stack."""
    leading = spatial_ndim(shape, rgb) - 2
    if leading < 0:
        raise ImageError(f"An image of shape {shape} has fewer than two spatial axes; nothing to evaluate.")
    return [SliceRef(tuple(index)) for index in product(*(range(n) for n in shape[:leading]))]


def slice_label(ref: SliceRef) -> str:
    """A slice as a table cell: ``"12"`` in a stack, ``"2D"`` for an image, ``"(3, 12)"`` beyond 3D."""
    if not ref.index:
        return "2D"
    return str(ref.index[0]) if len(ref.index) == 1 else str(ref.index)


def plane_spacing(spacing: Sequence[float] | None) -> tuple[float, float] | None:
    """The (row, column) pixel size from a layer's scale or a file's spacing (its last two axes);
    None (pixels) when there is none or it is all ones."""
    if spacing is None:
        return None
    values = [float(s) for s in spacing][-2:]
    if len(values) != 2 or not all(math.isfinite(v) and v > 0 for v in values):
        raise ImageError(f"The spacing {printable(spacing)[:60]} is not positive sizes of the slice's axes.")
    return None if values == [1.0, 1.0] else (values[0], values[1])


def class_names_for(*arrays: np.ndarray) -> tuple[str, ...]:
    """Names for the classes found in label arrays: background, class 1, class 2, …"""
    top = max((int(np.max(a)) if a.size else 0) for a in arrays)
    return ("background", *(f"class {k}" for k in range(1, max(top, 1) + 1)))


def iter_score(
    predicted: Any,
    reference: Any,
    *,
    class_names: Sequence[str] | None = None,
    slices: Iterable[SliceRef] | None = None,
    spacing: Sequence[float] | None = None,
    unit: str | None = None,
    tolerance: float | None = None,
    name: str = "prediction",
    reference_name: str = "reference",
    allow_empty: bool = False,
) -> Generator[Progress, None, Evaluation]:
    """Score a labels array against a reference of the same shape, slice by slice.

    predicted, reference: (H, W) or (Z, H, W) integer label maps (0 = background); slices: which
    (default every one); spacing: the layer's scale or the file's spacing (its last two axes are
    the slice's row and column sizes), in ``unit`` (default "mm"; pixels when None or all ones).
    tolerance: NSD's, in the same unit (default two pixels' worth). A reference without any label is
    refused (the wrong layer, most likely) unless ``allow_empty`` (one image of a folder may show nothing).
    """
    _check_shapes(tuple(predicted.shape), tuple(reference.shape), name, reference_name)
    if not class_names:
        class_names = class_names_for(np.asarray(predicted), np.asarray(reference))
    return (
        yield from _score(
            lambda ref: take_slice(predicted, ref),
            reference,
            class_names=class_names,
            slices=slices,
            spacing=spacing,
            unit=unit,
            tolerance=tolerance,
            name=name,
            reference_name=reference_name,
            labels=None,
            allow_empty=allow_empty,
        )
    )


def iter_evaluate(
    source: LoadedModel | Ensemble | Any,
    reference: Any,
    *,
    image: Any = None,
    rgb: bool = False,
    slices: Iterable[SliceRef] | None = None,
    spacing: Sequence[float] | None = None,
    unit: str | None = None,
    tolerance: float | None = None,
    name: str | None = None,
    reference_name: str = "reference",
    allow_empty: bool = False,
) -> Generator[Progress, None, Evaluation]:
    """Score a model (predicting each slice of ``image`` it needs) or a labels array against ``reference``.

    source: a loaded model or ensemble, or an integer labels array shaped like ``reference``.
    image: the (H, W[, C]) image or (Z, H, W[, C]) stack the model predicts (``rgb``: its last axis
    is colour). The rest as ``iter_score``; the returned ``labels`` hold the model's prediction.
    """
    if not isinstance(source, LoadedModel | Ensemble):
        result = yield from iter_score(
            source,
            reference,
            slices=slices,
            spacing=spacing,
            unit=unit,
            tolerance=tolerance,
            name=name or "labels",
            reference_name=reference_name,
            allow_empty=allow_empty,
        )
        return dataclasses.replace(result, labels=source)
    from slicewise.core.inference import iter_predict

    if image is None:
        raise ImageError(f"Evaluating {source.name} needs the image it predicts; choose the image layer.")
    shape = tuple(image.shape[:-1] if rgb else image.shape)
    _check_shapes(shape, tuple(reference.shape), f"The image {source.name} predicts", reference_name)
    class_names = source.spec.output.class_names
    labels = np.zeros(reference.shape, np.uint8)

    def predicted(ref: SliceRef) -> np.ndarray:
        plane = take_slice(image, ref, rgb=rgb)
        generator = iter_predict(source, plane, PredictOptions(slice_ref=ref))
        while True:  # the model's own steps: no yield here, the slice loop yields between slices
            try:
                next(generator)
            except StopIteration as stop:
                prediction = stop.value
                break
        labels[ref.index] = prediction.labels
        return prediction.labels

    return (
        yield from _score(
            predicted,
            reference,
            class_names=class_names,
            slices=slices,
            spacing=spacing,
            unit=unit,
            tolerance=tolerance,
            name=name or source.name,
            reference_name=reference_name,
            labels=labels,
            allow_empty=allow_empty,
        )
    )


def _check_shapes(shape: tuple[int, ...], reference: tuple[int, ...], name: str, reference_name: str) -> None:
    if shape != reference:
        raise ImageError(
            f"{printable(name)} has shape {shape} but the reference {printable(reference_name)} has {reference}; "
            "choose a reference labels layer drawn on the same image."
        )


def _score(
    predicted_slice: Any,
    reference: Any,
    *,
    class_names: Sequence[str] | None,
    slices: Iterable[SliceRef] | None,
    spacing: Sequence[float] | None,
    unit: str | None,
    tolerance: float | None,
    name: str,
    reference_name: str,
    labels: np.ndarray | None,
    allow_empty: bool,
) -> Generator[Progress, None, Evaluation]:
    refs = slice_refs(tuple(reference.shape)) if slices is None else list(slices)
    if not refs:
        raise ImageError("There are no slices to evaluate; choose the viewed slice or all slices.")
    if not allow_empty and not np.any(reference):
        raise ImageError(
            f"The reference {printable(reference_name)} holds no labels; choose the layer with the reference masks."
        )
    plane = plane_spacing(spacing)
    unit = PIXELS if plane is None else (unit or "mm")
    tolerance = default_tolerance(plane) if tolerance is None else float(tolerance)
    rows: list[Row] = []
    per_slice: dict[SliceRef, dict[str, float]] = {}
    total = NO_COUNTS
    names = tuple(class_names or class_names_for(np.asarray(reference)))
    for step, ref in enumerate(refs):
        yield Progress(step, len(refs), f"evaluating {name}: {ref.describe()}")
        truth = take_slice(reference, ref).astype(np.int64, copy=False)
        guess = np.asarray(predicted_slice(ref)).astype(np.int64, copy=False)
        _check_classes(truth, guess, names, name, reference_name)
        present = []
        for cls in range(1, len(names)):
            scores, counts = class_scores(guess, truth, cls, spacing=plane, tolerance=tolerance)
            rows.append(Row(ref, cls, names[cls], scores, counts))
            total = total + counts
            if not counts.empty:
                present.append(scores)
        per_slice[ref] = mean_over_classes(present)
    yield Progress(len(refs), len(refs), f"evaluated {name}")
    means = {key: float(np.mean([s[key] for s in per_slice.values()])) for key in METRICS}
    return Evaluation(
        name=name,
        reference=reference_name,
        class_names=names,
        unit=unit,
        tolerance=tolerance,
        rows=tuple(rows),
        per_slice=per_slice,
        pooled=total.scores(),
        mean=means,
        labels=labels,
    )


def _check_classes(truth: np.ndarray, guess: np.ndarray, names: Sequence[str], name: str, reference: str) -> None:
    top = max(int(truth.max(initial=0)), int(guess.max(initial=0)))
    if top >= len(names) or truth.min(initial=0) < 0:
        raise ImageError(
            f"{printable(reference)} has class {top} but {printable(name)} knows {len(names)} classes "
            f"({', '.join(names)}); choose a reference of the model's task."
        )


def merge(
    named: Sequence[tuple[str, Evaluation]], *, name: str | None = None, reference: str | None = None
) -> Evaluation:
    """Evaluations of several images (a folder of files) as one table: image i's slice ``ref`` becomes
    ``SliceRef((i, *ref.index))``, named by its stem; pooled over every image's counts. They must
    share classes and units."""
    if not named:
        raise ImageError("There are no images to evaluate; give a folder with at least one image.")
    first = named[0][1]
    rows, per_slice, names = [], {}, {}
    for i, (stem, evaluation) in enumerate(named):
        if evaluation.class_names != first.class_names or evaluation.unit != first.unit:
            raise ImageError(f"{printable(stem)} has other classes or units than {printable(named[0][0])}.")
        for ref, scores in evaluation.per_slice.items():
            key = SliceRef((i, *ref.index))
            per_slice[key] = scores
            names[key] = stem if not ref.index else f"{stem}:{slice_label(ref)}"
        rows += [
            Row(SliceRef((i, *r.slice_ref.index)), r.cls, r.class_name, r.scores, r.counts) for r in evaluation.rows
        ]
    total = sum((row.counts for row in rows), NO_COUNTS)
    return Evaluation(
        name=name or first.name,
        reference=reference or first.reference,
        class_names=first.class_names,
        unit=first.unit,
        tolerance=first.tolerance,
        rows=tuple(rows),
        per_slice=per_slice,
        pooled=total.scores(),
        mean={key: float(np.mean([s[key] for s in per_slice.values()])) for key in METRICS},
        slice_names=names,
    )


def read_pairs(images: str | os.PathLike, reference: str | os.PathLike) -> list[tuple[str, Path, Path]]:
    """(stem, image file, reference file) for every image in the folder ``images`` (or one file) whose
    stem has a file in the folder ``reference``; an image without one is an error that names it."""
    from slicewise.io.images import IMAGE_SUFFIXES, output_stem, references_by_image
    from slicewise.io.medical import is_medical_path

    images, reference = Path(images), Path(reference)
    for folder, what in ((images, "--images"), (reference, "--reference")):
        if not folder.exists():
            raise ImageError(f"{what} {folder} does not exist; give a folder of images or label maps.")
    if not reference.is_dir():
        raise ImageError(f"--reference {reference} is not a folder; give the folder of reference label maps.")

    def usable(path: Path) -> bool:
        return path.is_file() and (path.suffix.lower() in IMAGE_SUFFIXES or is_medical_path(path))

    files = [images] if images.is_file() else sorted(p for p in images.iterdir() if usable(p))
    by_image = references_by_image(files, sorted(p for p in reference.iterdir() if usable(p)), reference)
    if not by_image:
        raise ImageError(f"{images} holds no images (PNG, TIFF, NumPy, NIfTI, NRRD, DICOM); point --images at them.")
    return [(output_stem(p), p, mask) for p, mask in by_image.items()]


def _read(path: Path) -> tuple[np.ndarray, tuple[float, ...] | None]:
    """A file's array and its spacing (medical files), or None (plain images: pixels)."""
    from slicewise.io.images import read_image
    from slicewise.io.medical import is_medical_path, read_volume

    if is_medical_path(path):
        volume = read_volume(path)
        return volume.array, volume.spacing
    return read_image(path), None


def iter_evaluate_files(
    source: LoadedModel | Ensemble, pairs: Sequence[tuple[str, Path, Path]], *, tolerance: float | None = None
) -> Generator[Progress, None, Evaluation]:
    """Evaluate a model on every (stem, image, reference) file pair (``read_pairs``) and merge them:
    each 2D image is one row, a stack's slices one row each; medical files keep their spacing in mm."""
    from slicewise.core.inference import run_to_end
    from slicewise.core.slices import is_rgb
    from slicewise.io.images import as_label_map

    named = []
    for step, (stem, image_path, reference_path) in enumerate(pairs):
        yield Progress(step, len(pairs), f"evaluating {source.name}: {stem}")
        image, spacing = _read(image_path)
        reference = as_label_map(_read(reference_path)[0])
        evaluation = run_to_end(
            iter_evaluate(
                source,
                reference,
                image=image,
                rgb=is_rgb(image.shape),
                spacing=spacing,
                tolerance=tolerance,
                reference_name=reference_path.name,
                allow_empty=True,
            )
        )
        named.append((stem, evaluation))
    return merge(named, name=source.name, reference=pairs[0][2].parent.name if pairs else None)


def evaluate(source: Any, reference: Any, **options: Any) -> Evaluation:
    """Run ``iter_evaluate`` to the end (the CLI and scripts)."""
    from slicewise.core.inference import run_to_end

    return run_to_end(iter_evaluate(source, reference, **options))


def disagreement(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Where two label maps differ: 1 = A only, 2 = B only, 3 = both (the same class), 4 = both,
    another class; 0 = neither. a, b: label arrays of one shape; returns uint8 of that shape."""
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        raise ImageError(f"The two label maps have shapes {a.shape} and {b.shape}; compare predictions of one image.")
    in_a, in_b = a != 0, b != 0
    result = np.zeros(a.shape, np.uint8)
    result[in_a & ~in_b] = A_ONLY
    result[in_b & ~in_a] = B_ONLY
    result[in_a & in_b] = OTHER_CLASS
    result[in_a & in_b & (a == b)] = BOTH
    return result


def disagreement_on(a: Any, b: Any, slices: Iterable[SliceRef]) -> np.ndarray:
    """``disagreement`` of two label arrays of one shape on ``slices`` only (0 elsewhere)."""
    result = np.zeros(a.shape, np.uint8)
    for ref in slices:
        result[ref.index] = disagreement(take_slice(a, ref), take_slice(b, ref))
    return result


def map_legend(a: str, b: str | None = None) -> dict[int, str]:
    """What each value of an errors map (``b`` None: ``a`` against the reference) or of a disagreement
    map (A against B) means, for legends and napari's status bar."""
    if b is None:
        return {
            A_ONLY: f"{a} only (false positive)",
            B_ONLY: "reference only (missed)",
            BOTH: "both (hit)",
            OTHER_CLASS: "both, another class",
        }
    return {A_ONLY: f"{a} only", B_ONLY: f"{b} only", BOTH: "both", OTHER_CLASS: "both, another class"}


def agreement_dice(disagreement_map: np.ndarray) -> float:
    """Dice between A and B from their disagreement map (1.0 when neither has anything)."""
    m = np.asarray(disagreement_map)
    both = int(np.count_nonzero(m == BOTH))
    a = int(np.count_nonzero((m == A_ONLY) | (m == OTHER_CLASS))) + both
    b = int(np.count_nonzero((m == B_ONLY) | (m == OTHER_CLASS))) + both
    return 2 * both / (a + b) if a + b else 1.0


def compare(a: Evaluation, b: Evaluation) -> Comparison:
    """Pair two evaluations over the slices both scored (same reference): Wilcoxon on per-slice Dice,
    slices ordered by |Dice A − Dice B|, and the disagreement map when both kept their labels."""
    common = [ref for ref in a.per_slice if ref in b.per_slice]
    if not common:
        raise ImageError(f"{a.name} and {b.name} share no evaluated slice; evaluate both on the same slices.")
    dice_a, dice_b = a.dice(), b.dice()
    order = sorted(common, key=lambda ref: abs(dice_a[ref] - dice_b[ref]), reverse=True)
    first = np.array([dice_a[ref] for ref in order])
    second = np.array([dice_b[ref] for ref in order])
    if len(order) < 2:
        p_value = math.nan
    elif not np.any(first - second):
        p_value = 1.0
    else:
        from scipy.stats import wilcoxon

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # few slices: scipy warns that the p-value is approximate
            p_value = float(wilcoxon(first, second).pvalue)
    both = a.labels is not None and b.labels is not None and a.labels.shape == b.labels.shape
    where = disagreement_on(a.labels, b.labels, order) if both else None
    return Comparison(
        a=a,
        b=b,
        order=tuple(order),
        dice_a=tuple(float(v) for v in first),
        dice_b=tuple(float(v) for v in second),
        p_value=p_value,
        disagreement=where,
    )


def table_columns(unit: str) -> tuple[str, ...]:
    """The table's columns; HD95 names its unit (``hd95_mm``, ``hd95_px``)."""
    return ("model", "slice", "class", "dice", "iou", f"hd95_{unit}", "nsd", "precision", "recall", "ref_px", "pred_px")


def table_rows(evaluation: Evaluation) -> list[tuple[Any, ...]]:
    """The per-slice, per-class rows as plain values, in ``table_columns`` order."""
    return [
        (
            evaluation.name,
            evaluation.label(row.slice_ref),
            row.class_name,
            *(round(row.scores[key], 4) for key in ("dice", "iou", "hd95", "nsd", "precision", "recall")),
            row.counts.true_positive + row.counts.false_negative,
            row.counts.true_positive + row.counts.false_positive,
        )
        for row in evaluation.rows
    ]


def to_csv(evaluations: Sequence[Evaluation]) -> str:
    """Every evaluation's rows, then its pooled and mean figures, as CSV text."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(table_columns(evaluations[0].unit if evaluations else PIXELS))
    for evaluation in evaluations:
        writer.writerows(table_rows(evaluation))
    for evaluation in evaluations:
        for kind, figures in (("pooled", evaluation.pooled), ("mean", evaluation.mean)):
            cells = [round(figures[key], 4) if key in figures else "" for key in METRIC_ORDER]
            writer.writerow([evaluation.name, kind, "all", *cells, "", ""])
    return out.getvalue()


METRIC_ORDER = ("dice", "iou", "hd95", "nsd", "precision", "recall")


def plot(figure: Any, evaluations: Sequence[Evaluation]) -> None:
    """Draw per-slice Dice along the stack (left) and a box plot of it per model (right) on a
    matplotlib ``Figure`` (the widget's dock canvas, or one saved as PNG)."""
    figure.clear()
    along, boxes = figure.subplots(1, 2, gridspec_kw={"width_ratios": [3, 1]})
    for evaluation in evaluations:
        refs = sorted(evaluation.per_slice, key=lambda ref: ref.index)
        xs = [ref.index[-1] if ref.index else 0 for ref in refs] if not evaluation.slice_names else range(len(refs))
        along.plot(
            list(xs), [evaluation.per_slice[ref]["dice"] for ref in refs], "o-", ms=3, lw=1, label=evaluation.name
        )
    along.set(xlabel="slice", ylabel="Dice", ylim=(-0.02, 1.02), title=f"per slice, against {evaluations[0].reference}")
    along.legend(fontsize="small", loc="best")
    boxes.boxplot([list(e.dice().values()) for e in evaluations], showmeans=True)
    boxes.set_xticks(range(1, len(evaluations) + 1), [_short(e.name) for e in evaluations], fontsize="small")
    boxes.set(ylim=(-0.02, 1.02), title="Dice per model")
    for axes in (along, boxes):
        axes.title.set_fontsize("small")
        axes.tick_params(labelsize="small")
        axes.grid(alpha=0.3)
    if figure.get_layout_engine() is None:  # a figure made with layout="constrained" lays itself out
        figure.tight_layout()


def _short(name: str, limit: int = 14) -> str:
    return name if len(name) <= limit else name[: limit - 1] + "…"
