"""Cost of each uncertainty (and explanation) method against a plain prediction of the same slice.

Baseline: ``slicewise.predict(model, image)`` with no extras, the default model, real 256²
Kvasir-SEG test images. MC dropout runs the same weights with dropout 0.1 switched on (the
default model has none, and dropout layers carry no weights). The ensemble is two copies.

    python benchmarks/uncertainty_cost.py [--device cpu|cuda] [--repeats 15]
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import numpy as np
from predict_latency import machine, percentiles

import slicewise
from slicewise.io.samples import sample_stack
from slicewise.models.checkpoint import load_checkpoint
from slicewise.models.loaded import from_state


def timed(run, images: np.ndarray, repeats: int) -> list[float]:
    run(images[0])
    times = []
    for i in range(repeats):
        started = time.perf_counter()
        run(images[i % len(images)])
        times.append(time.perf_counter() - started)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    model = slicewise.load_model(slicewise.DEFAULT_MODEL, device=args.device)
    header, state = load_checkpoint(slicewise.bundled_models()[slicewise.DEFAULT_MODEL])
    dropout_spec = dataclasses.replace(header.spec, init_kwargs={**header.spec.init_kwargs, "dropout": 0.1})
    with_dropout = from_state(dropout_spec, state, device=args.device)
    ensemble = slicewise.load_model([slicewise.DEFAULT_MODEL, slicewise.DEFAULT_MODEL], device=args.device)
    images, _, _ = sample_stack("kvasir_seg", "test")
    cases = [
        ("plain prediction", lambda im: slicewise.predict(model, im)),
        ("entropy", lambda im: slicewise.predict(model, im, uncertainty="entropy")),
        ("tta (8 views, 1 batch)", lambda im: slicewise.predict(model, im, uncertainty="tta")),
        ("mc_dropout (8 samples)", lambda im: slicewise.predict(with_dropout, im, uncertainty="mc_dropout")),
        ("ensemble of 2 + entropy", lambda im: slicewise.predict(ensemble, im, uncertainty="entropy")),
        ("explain gradcam", lambda im: slicewise.predict(model, im, explain="gradcam")),
        ("explain saliency (IG 16)", lambda im: slicewise.predict(model, im, explain="saliency")),
        ("explain occlusion", lambda im: slicewise.predict(model, im, explain="occlusion")),
    ]
    print(f"machine: {machine()}")
    print(f"model: {model.name} on {model.describe_device()}; 256² RGB slices; baseline = plain prediction")
    print(f"{'method':<26} {'p50 ms':>8} {'p95 ms':>8} {'ratio vs plain p50':>19}")
    baseline = None
    for name, run in cases:
        p50, p95 = percentiles(timed(run, images, args.repeats))
        baseline = baseline or p50
        print(f"{name:<26} {p50:>8.1f} {p95:>8.1f} {p50 / baseline:>18.2f}×")


if __name__ == "__main__":
    main()
