"""Which slice should a person label next? Active-learning strategies for teach, measured.

A pool of unlabelled training images stands for a person's stack. Teach starts from 3 labelled
slices; each round adds the one slice a strategy picks, teaches again (warm-started from the last
round, as the widget does) and scores the proposals on every slice still unlabelled — what the
person gets for the next label. Strategies:

- ``uncertain``: the slice the taught model is least sure about (``core.teach.iter_next_slice``,
  what the widget's "Next slice to label" does);
- ``unlike``: the slice whose mean-pooled encoder features are farthest (cosine) from every
  labelled slice's, "least like the labelled ones";
- ``random``: the baseline.

    python benchmarks/teach_next_slice.py [--task kvasir_seg] [--pool 40] [--rounds 5] [--seeds 0 1]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from teach_fewlabel import _dice, _load  # noqa: E402

from slicewise.core.features import slice_features  # noqa: E402
from slicewise.core.inference import predict, run_to_end  # noqa: E402
from slicewise.core.teach import TeachOptions, iter_next_slice, teach  # noqa: E402

STRATEGIES = ("uncertain", "unlike", "random")


def _pooled(encoder: str, image: np.ndarray) -> torch.Tensor:
    """A slice's encoder features, each stage mean-pooled and unit length, concatenated."""
    maps = slice_features(encoder, image).maps
    return torch.cat([torch.nn.functional.normalize(m.mean((-2, -1)), dim=1)[0] for m in maps])


def _pick(strategy: str, model, images, labelled: list[int], encoder: str, rng: random.Random) -> int:
    rest = [i for i in range(len(images)) if i not in labelled]
    if strategy == "uncertain":
        return run_to_end(iter_next_slice(model, images, labelled))
    if strategy == "unlike":
        pooled = {i: _pooled(encoder, images[i]) for i in range(len(images))}
        return max(rest, key=lambda i: -max(float(pooled[i] @ pooled[j]) for j in labelled))
    return rng.choice(rest)


def run(task: str, pool: int, rounds: int, seed: int, encoder: str) -> list[dict]:
    images, masks = _load(task, "train")
    chosen = random.Random(seed).sample(range(len(images)), pool)
    images, masks = [images[i] for i in chosen], [(masks[i] > 0).astype(np.uint8) for i in chosen]
    rows = []
    for strategy in STRATEGIES:
        rng = random.Random(seed)
        labelled = [0, 1, 2]
        model = None
        for round_ in range(rounds + 1):
            model, report = teach(
                [images[i] for i in labelled],
                [masks[i] for i in labelled],
                options=TeachOptions(encoder=encoder),
                previous=model,
            )
            rest = [i for i in range(len(images)) if i not in labelled]
            dice = float(np.mean([_dice(predict(model, images[i]).labels, masks[i]) for i in rest]))
            row = {
                "task": task,
                "seed": seed,
                "strategy": strategy,
                "labels": len(labelled),
                "dice_rest": round(dice, 4),
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
            if round_ < rounds:
                labelled.append(_pick(strategy, model, images, labelled, encoder, rng))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="kvasir_seg")
    parser.add_argument("--pool", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--encoder", default="efficientnet_lite0")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cpu = platform.processor() or platform.machine()
    print(f"machine: {cpu}, {os.cpu_count()} cores, {args.threads} torch threads, load {os.getloadavg()[0]:.1f}")
    rows = [row for seed in args.seeds for row in run(args.task, args.pool, args.rounds, seed, args.encoder)]
    final = 3 + args.rounds
    print(
        f"\n| strategy | Dice on the unlabelled slices with 3 labels | with {final} labels | gain (mean over seeds) |"
    )
    print("|---|---|---|---|")
    for strategy in STRATEGIES:
        start = np.mean([r["dice_rest"] for r in rows if r["strategy"] == strategy and r["labels"] == 3])
        end = np.mean([r["dice_rest"] for r in rows if r["strategy"] == strategy and r["labels"] == final])
        print(f"| {strategy} | {start:.3f} | {end:.3f} | {end - start:+.3f} |")


if __name__ == "__main__":
    main()
