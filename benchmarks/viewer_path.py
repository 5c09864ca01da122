"""Follow-the-slice in napari against the core path, at 256² (issue 18, item 4).

Rows, on real Kvasir-SEG test images in a 256² stack, the default model on the CPU:
- core path: take the slice from the stack, ``slicewise.predict`` (entropy uncertainty, as the
  widget's default) and write labels, probabilities and uncertainty into stack-shaped arrays;
- viewer path, written: ``viewer.dims.set_current_step`` with "follow the slice" on and the
  widget's defaults, until the predict panel reports the slice (every layer written), in a shown
  window (rendering included) under a display, e.g. ``xvfb-run -a``; the dock is added as the plugin
  menu adds it and the window sized as ``slicewise demo`` sizes it (1400×900, at most the screen);
- viewer path, shown: the same, until the end of the window's frame that shows the slice's layers.
The ratio is each row's p50 over the core path's p50, measured side by side in one run. Run it
with ``PYTHONPATH=<older checkout>/src`` to measure an older slicewise the same way.

    xvfb-run -a python benchmarks/viewer_path.py [--repeats 20] [--threads 1]

Measured 2026-12-01 on a 2-core AMD EPYC shared with other sessions (load average 4.8-5.6 on 2
cores), Xvfb 1280×1024 with Mesa llvmpipe (software OpenGL), torch 2.13.0, 1 thread, 12 slice
changes per row, before and after alternating (before, after, before, after); before = 660ff62
(the dock made the window 1280×2401, taller than the screen; a new status relayouted the window in
two more frames), after = the dock scrolls (window 1280×900) and the status is laid out at once:

    run       load  core p50 ms  written p50 ms  shown p50 ms  written / core  shown / core
    before    5.6          55.4           345.1         554.8           6.23×        10.02×
    after     5.1          37.7           273.4         372.7           7.25×         9.88×
    before    4.8          45.2           401.4         628.2           8.88×        13.90×
    after     4.8          49.2           264.7         385.4           5.38×         7.84×

Written 345-401 ms -> 265-273 ms, shown 555-628 ms -> 373-385 ms. The core path itself moved
38-55 ms with the other sessions' load, so the ratios are noisier than the times. Issue 18's
goal (≤ 1.5× the core path) is not met: one frame of the window under software OpenGL costs
more than the core path (docs/speed.md, "4. The viewer path").
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
    written, shown = time_viewer(slicewise.DEFAULT_MODEL, "cpu", stack, args.repeats, show=True, threads=args.threads)
    rows = [
        ("core path", core),
        ("viewer path, written", percentiles(written)),
        ("viewer path, shown", percentiles(shown)),
    ]
    print(f"machine: {machine()}; load average {os.getloadavg()[0]:.1f}")
    print(f"slicewise from {os.path.dirname(slicewise.__file__)}")
    print(f"{'path (256²)':<22} {'p50 ms':>8} {'p95 ms':>8} {'ratio vs core p50':>18}")
    for name, (p50, p95) in rows:
        print(f"{name:<22} {p50:>8.1f} {p95:>8.1f} {p50 / core[0]:>17.2f}×")


if __name__ == "__main__":
    main()
