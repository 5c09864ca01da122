"""Slice-change-to-layer latency of the default model, against a bare ``model(x)`` forward.

Rows, per slice size (256² and 512², real Kvasir-SEG test images resized into a stack):
- bare forward: ``module(x)`` under ``torch.inference_mode`` on the already prepared tensor
  (the baseline: what the network alone costs);
- core path: take the slice from the stack, ``slicewise.predict`` (prepare, forward,
  probabilities, labels) and write labels and probabilities into stack-shaped output arrays;
- viewer path (with a display, e.g. under xvfb-run): ``viewer.dims.set_current_step`` with
  "follow the slice" on and the widget's defaults (entropy uncertainty), until the widget has
  written the slice into all its napari layers.
The ratio column is p50 divided by the bare forward's p50 (our overhead).

    python benchmarks/predict_latency.py [--device cpu|cuda] [--repeats 30]
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from collections.abc import Callable

import numpy as np
import torch
from skimage.transform import resize

import slicewise
from slicewise.core.preprocess import prepare
from slicewise.core.slices import put_slice
from slicewise.core.types import SliceRef
from slicewise.io.samples import sample_stack


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as handle:
            cpu = next(line.split(":", 1)[1].strip() for line in handle if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    gpu = f", GPU {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""
    return f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads){gpu}"


def percentiles(seconds: list[float]) -> tuple[float, float]:
    ms = np.asarray(seconds) * 1000
    return float(np.percentile(ms, 50)), float(np.percentile(ms, 95))


def make_stack(size: int, count: int) -> np.ndarray:
    images, _, _ = sample_stack("kvasir_seg", "test")
    chosen = images[:count]
    if size == chosen.shape[1]:
        return chosen
    return np.stack(
        [(resize(im, (size, size), preserve_range=True, anti_aliasing=False)).astype(np.uint8) for im in chosen]
    )


def time_bare(model: slicewise.LoadedModel, stack: np.ndarray, repeats: int) -> list[float]:
    x = torch.from_numpy(prepare(stack[0], model.spec.input)).unsqueeze(0).to(model.device)
    if model.adapter.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    times = []
    with torch.inference_mode():
        for i in range(repeats + 3):
            started = time.perf_counter()
            model.module(x)
            if model.device.type == "cuda":
                torch.cuda.synchronize()
            if i >= 3:
                times.append(time.perf_counter() - started)
    return times


def core_step(model: slicewise.LoadedModel, stack: np.ndarray, uncertainty: str | None = None) -> Callable[[], None]:
    """One call = the core path on the next slice: ``slicewise.predict`` (with ``uncertainty``), and
    labels, probabilities (and the uncertainty map) written into stack-shaped arrays."""
    labels = np.zeros(stack.shape[:3], np.uint8)
    probabilities = np.zeros((model.spec.output.num_classes, *stack.shape[:3]), np.float32)
    uncertainty_map = np.zeros(stack.shape[:3], np.float32)
    calls = [0]

    def step() -> None:
        ref = SliceRef((calls[0] % len(stack),))
        calls[0] += 1
        prediction = slicewise.predict(model, stack, slice_ref=ref, rgb=True, uncertainty=uncertainty)
        put_slice(labels, ref, prediction.labels)
        put_slice(probabilities, ref, prediction.probabilities)
        if uncertainty is not None:
            put_slice(uncertainty_map, ref, prediction.uncertainty)

    return step


def time_core(
    model: slicewise.LoadedModel, stack: np.ndarray, repeats: int, uncertainty: str | None = None
) -> list[float]:
    step = core_step(model, stack, uncertainty)
    times = []
    for i in range(repeats + 3):
        started = time.perf_counter()
        step()
        if i >= 3:
            times.append(time.perf_counter() - started)
    return times


def time_viewer(
    model_name: str,
    device: str,
    stack: np.ndarray,
    repeats: int,
    *,
    show: bool = False,
    threads: int | None = None,
) -> tuple[list[float], list[float]]:
    """Seconds from ``set_current_step`` until the predict panel's status names the new slice (every
    layer written), and until the end of the window's frame that shows it, with "follow the slice" on
    and the widget's defaults; ``show``: in a shown window (rendering included), the dock added as
    the plugin menu adds it and the window sized as ``slicewise demo`` sizes it (at most the screen).

    The status is looked at every 2 ms and at the start of each frame of the window (a frame keeps
    the 2 ms look waiting); without a window, both times are the status's.
    """
    import napari
    from qtpy.QtCore import QEvent, QEventLoop, QObject, QTimer

    from slicewise._qt.demo import fit_window
    from slicewise._qt.dock import SlicewiseDock

    class Frames(QObject):
        """Calls ``seen`` at the start of each frame (UpdateRequest) of the window it filters."""

        def __init__(self, seen: Callable[[bool], None]) -> None:
            super().__init__()
            self.seen = seen

        def eventFilter(self, _watched: QObject, event: QEvent) -> bool:  # noqa: N802 - Qt's name
            if event.type() == QEvent.Type.UpdateRequest:
                self.seen(True)
            return False

    viewer = napari.Viewer(show=show)
    layer = viewer.add_image(stack, rgb=True, name="bench")
    widget = SlicewiseDock(viewer)
    if show:
        viewer.window.add_dock_widget(widget)
        fit_window(viewer)
    if threads is not None:
        widget.source.threads.value = threads
        torch.set_num_threads(threads)
    widget.state.image, widget.state.model, widget.state.device = layer, model_name, device
    viewer.dims.set_current_step(0, 0)
    widget.predict.follow.value = True
    while widget.runner.running() or not widget.predict.status.value:
        QEventLoop().processEvents()
    size = viewer.window._qt_window.size()
    print(f"window {size.width()}×{size.height()}")
    written, shown = [], []
    for i in range(1, repeats + 4):
        z = i % len(stack)
        loop = QEventLoop()
        times: list[float] = []  # when the status named the slice

        def seen(frame: bool, loop: QEventLoop = loop, times: list[float] = times, z: int = z) -> None:
            if not times and f"slice {z} " in f"{widget.predict.status.value} ":
                times.append(time.perf_counter())
            if times and (frame or not show):
                loop.quit()  # at a frame's start: once that frame is drawn

        frames = Frames(seen)
        viewer.window._qt_window.installEventFilter(frames)
        poll = QTimer()  # a Label has no change signal: look every 2 ms (the wait is idle, not busy)
        poll.setInterval(2)
        poll.timeout.connect(lambda seen=seen: seen(False))
        started = time.perf_counter()
        viewer.dims.set_current_step(0, z)
        poll.start()
        QTimer.singleShot(30_000, loop.quit)
        loop.exec()
        ended = time.perf_counter()
        poll.stop()
        viewer.window._qt_window.removeEventFilter(frames)
        while widget.runner.running():
            QEventLoop().processEvents()
        if i > 3:
            written.append(times[0] - started)
            shown.append(ended - started)
    viewer.close()
    return written, shown


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--no-viewer", action="store_true", help="skip the napari row even with a display")
    args = parser.parse_args()
    model = slicewise.load_model(slicewise.DEFAULT_MODEL, device=args.device)
    with_viewer = not args.no_viewer and bool(os.environ.get("DISPLAY"))
    print(f"machine: {machine()}")
    params = sum(p.numel() for p in model.module.parameters()) / 1e6
    print(f"model: {model.name} ({model.spec.arch}, {params:.2f} M params) on {model.describe_device()}")
    print(f"{'size':>6} {'path':<14} {'p50 ms':>8} {'p95 ms':>8} {'ratio vs bare p50':>18}")
    for size in (256, 512):
        stack = make_stack(size, 12)
        bare_p50, bare_p95 = percentiles(time_bare(model, stack, args.repeats))
        rows = [
            ("bare forward", bare_p50, bare_p95),
            ("core path", *percentiles(time_core(model, stack, args.repeats))),
        ]
        if with_viewer:
            rows.append(
                (
                    "napari viewer",
                    *percentiles(time_viewer(slicewise.DEFAULT_MODEL, args.device, stack, args.repeats)[0]),
                )
            )
        for name, p50, p95 in rows:
            print(f"{size:>5}² {name:<14} {p50:>8.1f} {p95:>8.1f} {p50 / bare_p50:>17.2f}×")
    if not with_viewer:
        print("(no display: the napari viewer row needs one, e.g. xvfb-run -a python benchmarks/predict_latency.py)")


if __name__ == "__main__":
    main()
