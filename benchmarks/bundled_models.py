"""The bundled models side by side: how fast each follows the slice, how well it holds up elsewhere.

Speed: the core path (``slicewise.predict`` on one slice of a 256² Kvasir-SEG test stack, labels
and probabilities written back) per model, p50 over the repeats, against the baseline the
issue names: a bare forward of MONAI's BasicUNet (default features, 3 → 2 channels) on a
256² tensor. Each model runs as ``load_model`` chooses for this machine and, where that is not
plain PyTorch float32 (ONNX Runtime, say), forced to float32 too. Models and baseline are timed
in turn, round after round, so load on a shared machine hits all of them alike. Accuracy: the
test Dice each checkpoint's header carries (``slicewise-train export``: its own test split, and
other hospitals).

    python benchmarks/bundled_models.py [--repeats 20] [--threads 1]
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable

import numpy as np
import torch
from predict_latency import core_step, machine, make_stack  # the sibling benchmark's helpers

import slicewise
from slicewise.models.checkpoint import read_header
from slicewise.models.sources import bundled_models


def basic_unet_forward() -> Callable[[], None]:
    from monai.networks.nets import BasicUNet

    network = BasicUNet(spatial_dims=2, in_channels=3, out_channels=2).eval()
    x = torch.rand(1, 3, 256, 256)

    def forward() -> None:
        with torch.inference_mode():
            network(x)

    return forward


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    stack = make_stack(256, 12)
    polyp = [name for name in bundled_models() if name.startswith("polyp")]
    runs = {"BasicUNet bare forward (baseline)": basic_unet_forward()}
    checkpoint: dict[str, str] = {}  # row → the bundled model it times
    for name in polyp:
        chosen = slicewise.load_model(name, device="cpu")
        forced = [] if chosen.precision.name == "fp32" else [slicewise.load_model(name, device="cpu", precision="fp32")]
        for model in [chosen, *forced]:
            row = f"{name} ({model.precision.describe()})"
            runs[row], checkpoint[row] = core_step(model, stack), name
    load_before = os.getloadavg()[0]
    times: dict[str, list[float]] = {name: [] for name in runs}
    for round_ in range(args.repeats + 2):
        for name, run in runs.items():
            started = time.perf_counter()
            run()
            if round_ >= 2:  # warm-up rounds
                times[name].append(time.perf_counter() - started)
    baseline = float(np.median(times["BasicUNet bare forward (baseline)"]))
    print(f"machine: {machine()}, load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after")
    print("\n| model | use | p50 ms, 256² | ratio to BasicUNet | Kvasir-SEG mean Dice | CVC-ClinicDB mean Dice |")
    print("|---|---|---|---|---|---|")
    for name, seconds in times.items():
        p50 = float(np.median(seconds))
        if name in checkpoint:
            header = read_header(bundled_models()[checkpoint[name]])
            metrics = header.provenance.get("metrics", {})
            use = header.provenance.get("use", "")
            kvasir, cvc = metrics.get("test_mean_dice_kvasir_seg", "—"), metrics.get("test_mean_dice_cvc_clinicdb", "—")
        else:
            use, kvasir, cvc = "", "—", "—"
        print(f"| {name} | {use} | {p50 * 1000:.1f} | {p50 / baseline:.2f} | {kvasir} | {cvc} |")


if __name__ == "__main__":
    main()
