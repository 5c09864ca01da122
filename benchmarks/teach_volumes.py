"""Teach on 3D volumes no part of teach was designed on: label a few slices, propose on the rest.

A person opens a volume, paints a few slices completely, presses Teach and gets proposals on
every other slice. This scores that on the shared data's volumes, which shaped nothing in teach
(its settings were chosen on 2D Kvasir-SEG, HC18 and CHASE_DB1 validation images): two brain
tumour MR volumes and a breast lesion MR (pyradiomics' test data, int16, 6.5 / 2.1 mm slices)
and grey and white matter of the MNI152 template (axial slices, three classes).

The labelled slices are spread evenly over the slices that hold the object (as a person would
pick them; nothing is drawn at random). Score: Dice of each class over all the *other* slices
together (3D Dice, so proposals on slices without the object count against it), averaged over
the classes. Baseline named in the table: **filling between slices** (3D Slicer's "Fill between
slices", ITK-SNAP's interpolation, and the Teach panel's *Fill between*): each class's signed
distance interpolated linearly between the nearest labelled slices above and below; nothing
beyond the first and the last labelled slice, so one labelled slice gives the baseline nothing.
For one labelled slice of a one-class volume the table also gives **propagation**, the prompt
section's *Propagate*: LiteMedSAM prompted slice by slice, up and down, with the box of the mask
on the slice before, until ``PropagationRule`` says the object is gone (its thresholds were
chosen on these three lesion volumes, ``docs/prompts.md``: an optimistic figure).

    python benchmarks/teach_volumes.py [--volumes brain1 brain2 breast1 mni152] [--labels 1 2 3]
        [--empty 2] [--encoders efficientnet_lite0 tinyvit_litemedsam] [--threads 2] [--json out.json]

``--empty N`` also marks N slices without the object done (the Teach panel's *Mark slice done*),
spread evenly over them. Measured on 2 December 2026 (AMD EPYC, 2 cores, 2 torch threads):
``docs/teach.md``, *Volumes no part of teach was designed on*.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import numpy as np
import torch

from slicewise.api import load_model
from slicewise.core.inference import predict
from slicewise.core.interpolate import fill_between
from slicewise.core.prompting import iter_propagate
from slicewise.core.teach import TeachOptions, teach
from slicewise.errors import SlicewiseError
from slicewise.io.medical import read_volume
from slicewise.io.samples import shared_data_dir

VOLUMES = {
    "brain1": ("pyradiomics_3d/brain1_image.nrrd", "pyradiomics_3d/brain1_label.nrrd"),
    "brain2": ("pyradiomics_3d/brain2_image.nrrd", "pyradiomics_3d/brain2_label.nrrd"),
    "breast1": ("pyradiomics_3d/breast1_image.nrrd", "pyradiomics_3d/breast1_label.nrrd"),
    "mni152": ("mni152_icbm2009a_3d/image.nii.gz", "mni152_icbm2009a_3d/labels.nii.gz"),
}


def load(name: str) -> tuple[np.ndarray, np.ndarray]:
    """The volume's (Z, H, W) image and labels, slices along the first axis."""
    image_path, labels_path = (shared_data_dir() / part for part in VOLUMES[name])
    return read_volume(image_path).array, read_volume(labels_path).array.astype(np.int64)


def spread(labels: np.ndarray, count: int, *, holding: bool = True) -> list[int]:
    """``count`` slices spread evenly over the slices that hold a label (the middle one for 1),
    or with ``holding=False`` over those that hold none."""
    chosen = [z for z in range(len(labels)) if bool(labels[z].any()) == holding]
    return sorted({chosen[int((i + 0.5) * len(chosen) / count)] for i in range(count)}) if count and chosen else []


def baseline(labels: np.ndarray, labelled: list[int]) -> np.ndarray:
    """Filling between the labelled slices (``slicewise.core.interpolate``); all background where
    there is nothing to fill between (one labelled slice)."""
    try:
        return fill_between(labels, labelled)
    except SlicewiseError:
        return np.zeros_like(labels)


def propagated(image: np.ndarray, labels: np.ndarray, start: int) -> np.ndarray:
    """The object on slice ``start`` followed up and down the stack by LiteMedSAM (``iter_propagate``)."""
    proposals = np.zeros_like(labels)
    for prediction in iter_propagate(load_model("lite_medsam"), image, start=start, mask=labels[start] == 1):
        proposals[prediction.slice_ref.index[0]] = prediction.labels
    return proposals


def dice(predicted: np.ndarray, reference: np.ndarray, num_classes: int) -> float:
    """Mean over the foreground classes of each class's Dice over the whole given stack."""
    scores = []
    for c in range(1, num_classes):
        p, r = predicted == c, reference == c
        total = p.sum() + r.sum()
        scores.append(2 * (p & r).sum() / total if total else 1.0)
    return float(np.mean(scores))


def run(name: str, counts: list[int], encoders: list[str], empty: int) -> list[dict]:
    image, labels = load(name)
    num_classes = int(labels.max()) + 1
    rows = []
    holding = sum(bool(labels[z].any()) for z in range(len(labels)))
    for count in [c for c in counts if c < holding]:  # leave a slice holding the object to propose on
        labelled = spread(labels, count)
        done = sorted(labelled + spread(labels, empty, holding=False))
        others = [z for z in range(len(labels)) if z not in done]
        row = {"volume": name, "shape": list(image.shape), "labels": count, "slices": labelled}
        row["empty"] = len(done) - count
        filled = baseline(labels, labelled)
        row["fill_between"] = round(dice(filled[others], labels[others], num_classes), 3)
        if count == 1 and num_classes == 2:
            started = time.perf_counter()
            followed = propagated(image, labels, labelled[0])
            row["propagate"] = round(dice(followed[others], labels[others], num_classes), 3)
            row["propagate_s"] = round(time.perf_counter() - started, 1)
        for encoder in encoders:
            started = time.perf_counter()
            model, report = teach(image, labels, labelled=done, options=TeachOptions(encoder=encoder))
            proposals = np.stack([predict(model, image[z]).labels for z in others])
            row[encoder] = round(dice(proposals, labels[others], num_classes), 3)
            row[f"{encoder}_cv"] = None if report.cv_dice is None else round(report.cv_dice, 3)
            row[f"{encoder}_s"] = round(time.perf_counter() - started, 1)
            row[f"{encoder}_how"] = report.describe()
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def table(rows: list[dict], encoders: list[str]) -> str:
    head = "| volume | labelled slices | fill between slices (baseline) | propagate (one slice) | " + " | ".join(
        f"teach, {e} (× baseline)" for e in encoders
    )
    lines = [head + " |", "|---" * (4 + len(encoders)) + "|"]
    for row in rows:
        slices = f"{row['labels']}: {row['slices']}" + (f" + {row['empty']} empty" if row["empty"] else "")
        followed = f"{row['propagate']:.3f} ({row['propagate_s']:.0f} s)" if "propagate" in row else "—"
        cells = [f"{row['volume']} {tuple(row['shape'])}", slices, f"{row['fill_between']:.3f}", followed]
        for e in encoders:
            ratio = f"{row[e] / row['fill_between']:.2f}×" if row["fill_between"] else "—"  # nothing to fill
            cells.append(f"{row[e]:.3f} ({ratio}, {row[f'{e}_s']:.0f} s)")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--volumes", nargs="+", default=list(VOLUMES), choices=list(VOLUMES))
    parser.add_argument("--labels", nargs="+", type=int, default=[1, 2, 3])
    parser.add_argument("--encoders", nargs="+", default=["efficientnet_lite0", "tinyvit_litemedsam"])
    parser.add_argument("--empty", type=int, default=0, help="slices without the object also marked done")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cpu = platform.processor() or platform.machine()
    print(f"machine: {cpu}, {os.cpu_count()} cores, {args.threads} torch threads, load {os.getloadavg()[0]:.1f}")
    rows = [row for name in args.volumes for row in run(name, args.labels, args.encoders, args.empty)]
    print(table(rows, args.encoders))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(rows, handle, indent=1)


if __name__ == "__main__":
    main()
