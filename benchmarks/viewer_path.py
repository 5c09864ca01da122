"""Follow-the-slice in napari against the core path, at 256² (issue 18, item 4).

Rows, on real Kvasir-SEG test images in a 256² stack, the default model on the CPU:
- core path: take the slice from the stack, ``slicewise.predict`` (entropy uncertainty, as the
  widget's default) and write labels, probabilities and uncertainty into stack-shaped arrays;
- viewer path: ``viewer.dims.set_current_step`` with "follow the slice" on and the widget's
  defaults, until the predict panel reports the slice (every layer written), in a shown window
  (rendering included) under a display, e.g. ``xvfb-run -a``.
The ratio is each row's p50 over the core path's p50, measured side by side in one run. Run it
with ``PYTHONPATH=<older checkout>/src`` to measure an older slicewise the same way.

    xvfb-run -a python benchmarks/viewer_path.py [--repeats 20] [--threads 1]

Measured 2026-12-01 on a 2-core AMD EPYC shared with three other sessions (load average 8-10),
torch 2.13.0, 1 thread, 15 slice changes each; before = the tree before issue 13's changes
(P(class) layers always added, a progress bar per slice), after = P(class) layers only when asked
for, no bar for a quick prediction, refreshes without extent recomputation:

    run      core p50 ms  viewer p50 ms  viewer p95 ms  ratio vs core p50
    before         172.4          524.8          873.0              3.04×
    after           58.7          346.3          468.1              5.90×

The core path itself varied 3x between the two runs (other sessions' load), so neither the ratios
nor the difference are conclusive; issue 18's goal (≤ 1.5× the core path) is not shown met. Rerun on
a quiet machine before drawing conclusions.
"""

from __future__ import annotations

import argparse
import os

import torch
from predict_latency import machine, make_stack, percentiles, time_core, time_viewer

import slicewise


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1, help="torch threads for both paths (1 on a busy machine)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if not os.environ.get("DISPLAY"):
        raise SystemExit("the viewer path needs a display: xvfb-run -a python benchmarks/viewer_path.py")
    model = slicewise.load_model(slicewise.DEFAULT_MODEL, device="cpu")
    stack = make_stack(256, 12)
    core = percentiles(time_core(model, stack, args.repeats, uncertainty="entropy"))  # the widget's default
    viewer = percentiles(
        time_viewer(slicewise.DEFAULT_MODEL, "cpu", stack, args.repeats, show=True, threads=args.threads)
    )
    print(f"machine: {machine()}; load average {os.getloadavg()[0]:.1f}")
    print(f"slicewise from {os.path.dirname(slicewise.__file__)}")
    print(f"{'path (256²)':<14} {'p50 ms':>8} {'p95 ms':>8} {'ratio vs core p50':>18}")
    for name, (p50, p95) in (("core path", core), ("viewer path", viewer)):
        print(f"{name:<14} {p50:>8.1f} {p95:>8.1f} {p50 / core[0]:>17.2f}×")


if __name__ == "__main__":
    main()
