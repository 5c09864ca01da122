"""The usual baseline of the few-label table: a U-Net trained from scratch on the same few labelled images.

For each task and ``n`` the ``n`` training images are exactly those ``teach_fewlabel.py`` draws
(its ``_train_subset``, seed 0); a U-Net is trained on them alone with the project's own training
loop (``slicewise_train.loop.prepare_run`` and ``train_once``, as ``fit`` calls them) and scored
through ``slicewise.predict`` on the task's test split and, for polyps, on CVC-ClinicDB (another
hospital), as mean per-image foreground Dice (``teach_fewlabel._score``).

Recipe: the bundled from-scratch model's config with the training images replaced —
``training/configs/polyp_unet.json`` for Kvasir-SEG and for CHASE_DB1 (no bundled model of its
own), ``fetal_head_unet.json`` for HC18: MONAI U-Net 16-256 channels, 2 residual units, instance
norm; AdamW lr 1e-3, weight decay 1e-4, Dice+CE, batch 8 (all ``n`` images per step at 5),
cosine schedule (REX for HC18), standard MONAI augmentation (flips, 90° rotations, affine,
intensity), seed 20240607. Size: 128 px long side for every task (``--size``), as
``fetal_head_unet`` and the earlier calibration; ``polyp_unet`` itself trains at the images' 256
px, where a step cost about 3× as much on this loaded machine (one 256 px row was measured: 5
labels, 0.356 Kvasir-SEG / 0.285 CVC). Stopping: a fixed budget of 300 optimiser steps for every
``n`` (epochs = 300 / ceil(n / 8): 300 epochs at 5 labels, 60 at 40) and the last step's
weights — no early stopping, no learning-rate grid, no checkpoint chosen on any split: a person
with a few labels has no 45-image validation split. The loop insists on a validation split, so
it gets one of the ``n`` training images; its Dice is logged, never used. No test split chooses
anything. Reference: the bundled model trained with the same recipe on all 210 training images,
its checkpoint header's test figures (``polyp_unet`` 0.837 Kvasir-SEG / 0.849 CVC-ClinicDB, the
issue's baseline, at 256 px; ``fetal_head_unet`` 0.963 HC18).

    python benchmarks/teach_scratch_baseline.py [--tasks kvasir_seg hc18 chase_db1] [--sizes 5 10 20 40]
        [--steps 300] [--size 128] [--threads 1] [--json out.json]

Measured (AMD EPYC, 2 cores shared with other jobs, 1 torch thread, load average 5-10; the whole
run 50 min; the first two rows' seconds include a second run of this script competing for the
cores):

| task | labels | test Dice | ratio to all-210 model | other hospital (CVC) | ratio there | train s |
|---|---|---|---|---|---|---|
| kvasir_seg | 5 | 0.501 | 0.60 | 0.409 | 0.48 | 347 |
| kvasir_seg | 10 | 0.582 | 0.70 | 0.559 | 0.66 | 375 |
| kvasir_seg | 20 | 0.633 | 0.76 | 0.658 | 0.78 | 395 |
| kvasir_seg | 40 | 0.616 | 0.74 | 0.593 | 0.70 | 258 |
| hc18 | 5 | 0.805 | 0.84 | — | — | 136 |
| hc18 | 10 | 0.838 | 0.87 | — | — | 174 |
| hc18 | 20 | 0.882 | 0.92 | — | — | 238 |
| hc18 | 40 | 0.925 | 0.96 | — | — | 265 |
| chase_db1 | 5 | 0.405 | — | — | — | 215 |
| chase_db1 | 10 | 0.470 | — | — | — | 197 |
| chase_db1 | 20 | 0.431 | — | — | — | 229 |

CHASE_DB1 has 20 training images: no 40-label row. At 20 and 40 labels 300 steps leave the
training loss falling (0.63 and 0.59 at the end); a budget check with 3× the steps (``--steps
900 --tasks kvasir_seg --sizes 40 20``) fits the training images far better (loss 0.19 and 0.22)
but not the test images: 20 labels 0.582 Kvasir-SEG / 0.592 CVC (532 s), 40 labels 0.594 /
0.618 (853 s). The few-label U-Net is short of images, not of steps; the 300-step rows stand.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from monai.utils import set_determinism
from PIL import Image
from predict_latency import machine as cpu_and_threads  # the sibling benchmarks' helpers
from teach_fewlabel import OTHER_HOSPITAL, _load, _score, _train_subset

import slicewise
from slicewise.io.images import write_labels
from slicewise.io.samples import shared_data_dir, split_stems
from slicewise.models.checkpoint import read_header, save_checkpoint
from slicewise.models.loaded import LoadedModel
from slicewise.models.sources import bundled_models
from slicewise_train.config import TrainConfig
from slicewise_train.loop import Distributed, prepare_run, train_once

CONFIGS = Path(__file__).resolve().parents[1] / "training" / "configs"
# the bundled from-scratch model whose recipe each task uses (CHASE_DB1 has none: the polyp recipe, RGB)
RECIPES = {"kvasir_seg": "polyp_unet", "hc18": "fetal_head_unet", "chase_db1": "polyp_unet"}
# the bundled model trained with that recipe on all the task's training images: the reference row
REFERENCES = {"kvasir_seg": "polyp_unet", "hc18": "fetal_head_unet"}


def _dataset(root: Path, images: list[np.ndarray], masks: list[np.ndarray]) -> Path:
    """A throw-away dataset in the shared layout holding only the drawn images; val is the first of them
    because the loop needs a validation split (its Dice is logged, not used)."""
    stems = [f"{i:02d}" for i in range(len(images))]
    for stem, image, mask in zip(stems, images, masks, strict=True):
        (root / "images").mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(root / "images" / f"{stem}.png")  # PNG: the same pixels as read
        write_labels(root / "masks" / f"{stem}.png", mask)
    (root / "split.json").write_text(json.dumps({"train": stems, "val": stems[:1]}))
    return root


def train_from_scratch(task: str, n: int, steps: int, size: int | None, workdir: Path) -> tuple[LoadedModel, dict]:
    """The recipe's U-Net trained for ``steps`` optimiser steps on the ``n`` drawn images at long side ``size``
    (``None``: the recipe's own); the last weights."""
    images, masks = _train_subset(task, n)
    root = _dataset(workdir / f"{task}_{n}" / task, images, masks)
    config = TrainConfig.from_file(CONFIGS / f"{RECIPES[task]}.json")
    epochs = math.ceil(steps / math.ceil(n / config.batch_size))
    config = dataclasses.replace(
        config, data=(str(root),), epochs=epochs, patience=0, lr_grid=(), device="cpu", size=size or config.size
    )
    device = torch.device("cpu")
    set_determinism(seed=config.seed)  # as fit does: the same initial weights for every n
    setup = prepare_run(config, device)
    state = train_once(config, setup, config.learning_rate, epochs, None, device, Distributed())
    checkpoint = save_checkpoint(
        root.parent / "model.safetensors",
        setup.model.state_dict(),
        setup.spec,
        {"trained_by": "benchmarks/teach_scratch_baseline.py", "config": json.loads(config.to_json())},
    )
    losses = [epoch["loss"] for epoch in state["history"]]
    summary = {"epochs": epochs, "steps": state["step"], "final_train_loss": round(float(np.mean(losses[-10:])), 4)}
    return slicewise.load_model(checkpoint, device="cpu", precision="fp32"), summary


def _scored_on(task: str) -> list[str]:
    """The test splits a task's models are scored on: its own and, for polyps, another hospital's."""
    return [task, *([OTHER_HOSPITAL[task]] if task in OTHER_HOSPITAL else [])]


def reference(task: str) -> dict[str, float]:
    """Test Dice (mean per image) of the bundled model trained with the same recipe on all training images."""
    if task not in REFERENCES:
        return {}
    metrics = read_header(bundled_models()[REFERENCES[task]]).provenance["metrics"]
    return {name: metrics[f"test_mean_dice_{name}"] for name in _scored_on(task)}


def machine() -> str:
    """CPU, cores, torch threads (the sibling benchmark's line) and the load average now."""
    return f"{cpu_and_threads()}, load average {', '.join(f'{x:.1f}' for x in os.getloadavg())}"


def run(tasks: list[str], sizes: list[int], steps: int, size: int, json_path: str | None) -> dict:
    """Every (task, n) row, printed as it finishes and written to ``json_path`` after each (a partial run keeps
    its rows)."""
    results: dict = {"machine_start": machine(), "steps": steps, "size": size, "rows": []}
    print(f"machine: {results['machine_start']}", flush=True)
    with tempfile.TemporaryDirectory(prefix="scratch_baseline_") as workdir:
        for task in tasks:
            tests = {name: _load(name, "test") for name in _scored_on(task)}
            available = len(split_stems(shared_data_dir() / task, "train"))
            for n in sizes:
                if n > available:
                    print(f"{task} has {available} training images, fewer than {n}: no row", flush=True)
                    continue
                started = time.perf_counter()
                model, summary = train_from_scratch(task, n, steps, size or None, Path(workdir))
                row = {"task": task, "labels": n, **summary, "train_s": round(time.perf_counter() - started, 1)}
                for name, (images, masks) in tests.items():
                    row[f"dice_{name}"] = round(_score(model, images, masks), 3)
                results["rows"].append(row)
                print(json.dumps(row), flush=True)
                if json_path:
                    Path(json_path).write_text(json.dumps(results, indent=1))
    results["machine_end"] = machine()
    return results


def table(rows: list[dict]) -> str:
    """The markdown table: Dice on the task's test split and the other hospital, and the ratio to the reference."""
    lines = [
        "| task | labels | test Dice | ratio to all-210 model | other hospital (CVC) | ratio there | train s |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        ref = reference(row["task"])
        own = row[f"dice_{row['task']}"]
        other_name = OTHER_HOSPITAL.get(row["task"])
        other = row.get(f"dice_{other_name}")
        ratio = f"{own / ref[row['task']]:.2f}" if ref else "—"
        other_ratio = f"{other / ref[other_name]:.2f}" if other is not None else "—"
        lines.append(
            f"| {row['task']} | {row['labels']} | {own:.3f} | {ratio} | "
            f"{'—' if other is None else f'{other:.3f}'} | {other_ratio} | {row['train_s']:.0f} |"
        )
    for task in dict.fromkeys(row["task"] for row in rows):
        if task in REFERENCES:
            figures = ", ".join(f"{name} {dice:.3f}" for name, dice in reference(task).items())
            lines.append(f"\nReference, the same recipe on all 210 training images: `{REFERENCES[task]}` {figures}.")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", default=["kvasir_seg", "hc18", "chase_db1"], choices=list(RECIPES))
    parser.add_argument("--sizes", nargs="+", type=int, default=[5, 10, 20, 40])
    parser.add_argument("--steps", type=int, default=300, help="optimiser steps for every n (the fixed budget)")
    parser.add_argument("--size", type=int, default=128, help="long side in px for every task; 0: each recipe's own")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    results = run(args.tasks, args.sizes, args.steps, args.size, args.json)
    print(f"machine at the end: {results['machine_end']}\n\n{table(results['rows'])}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
