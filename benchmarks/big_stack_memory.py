"""Peak memory of predicting one slice of a multi-GB uint16 TIFF stack, against reading it whole.

The stack (default 80 × 4000 × 4000 uint16, 2.4 GiB) is written uncompressed to a temporary
folder, plane by plane through ``tifffile.memmap``; each plane is a montage of real HC18 test
ultrasound images at their native scale (×257 to uint16), shifted per plane. A fresh child
process per row loads the bundled ``fetal_head_unet``, opens the stack with
``slicewise.io.lazy.open_image`` and predicts one slice; its peak RSS is the row. The peak is
Linux's ``VmHWM`` reset after the model has loaded (``/proc/self/clear_refs``), not ``ru_maxrss``,
which a child inherits from its parent's high-water mark.

Rows:
- naive baseline (computed, not run): ``np.asarray(stack).astype(np.float32)`` holds the
  uint16 stack and its float32 copy, 3 × the stack, before the network starts; running it
  would take ~7 GiB from a machine others share;
- lazy open + tiled prediction (the default ``tile_size``, 1024 px): what the widget and
  ``slicewise.predict`` do;
- lazy open + untiled prediction (``tile_size=None``; ``--untiled``): one forward over the
  whole 4000² slice, to show what tiling saves.
The ratio column is the row's peak RSS over the naive baseline's (baseline = the stack and its
float32 copy plus the same process as the lazy rows before it opens the stack).

    python benchmarks/big_stack_memory.py [--frames 80] [--side 4000] [--untiled] [--dir /tmp]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import tifffile

from slicewise.core.types import DEFAULT_TILE_SIZE

GIB = 2**30
MODEL = "fetal_head_unet"


def montage_plane(side: int) -> np.ndarray:
    """A side × side uint16 plane tiled with the real HC18 test images (grayscale) at native scale."""
    from slicewise.io.images import read_image
    from slicewise.io.samples import shared_data_dir, split_stems

    root = shared_data_dir() / "hc18"
    images = [read_image(root / "images" / f"{stem}.png") for stem in split_stems(root, "test")]
    height, width = min(i.shape[0] for i in images), min(i.shape[1] for i in images)
    rows, cols = -(-side // height), -(-side // width)
    grid = [[images[(r * cols + c) % len(images)][:height, :width] for c in range(cols)] for r in range(rows)]
    return np.block(grid)[:side, :side].astype(np.uint16) * 257


def write_stack(path: Path, frames: int, side: int) -> None:
    """Write the stack plane by plane, so this process never holds more than two planes."""
    plane = montage_plane(side)
    stack = tifffile.memmap(path, shape=(frames, side, side), dtype=np.uint16)
    for z in range(frames):
        stack[z] = np.roll(plane, shift=(z * 37, z * 53), axis=(0, 1))
    stack.flush()
    del stack


def peak_rss() -> int:
    """This process's peak resident set since the last ``reset_peak_rss`` (Linux VmHWM), in bytes."""
    status = Path("/proc/self/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:"))) * 1024


def reset_peak_rss() -> None:
    Path("/proc/self/clear_refs").write_text("5")


def measure(path: Path, z: int, tile_size: int | None) -> dict:
    """In a fresh process: load the model, open the stack lazily, predict slice z; memory and time.

    The labels go to ``<stack>.labels-<tile_size>.npy`` beside the stack, for the agreement check.
    """
    import psutil
    import torch

    torch.set_num_threads(1)
    import slicewise
    from slicewise.core.types import SliceRef
    from slicewise.io.lazy import open_image

    model = slicewise.load_model(MODEL, device="cpu")
    reset_peak_rss()
    ready = psutil.Process().memory_info().rss
    forwards = []
    hook = model.module.register_forward_pre_hook(lambda _, args: forwards.append(tuple(args[0].shape)))
    started = time.perf_counter()
    stack = open_image(path)
    prediction = slicewise.predict(model, stack, slice_ref=SliceRef((z,)), tile_size=tile_size)
    seconds = time.perf_counter() - started
    hook.remove()
    np.save(path.with_name(f"{path.stem}.labels-{tile_size}.npy"), prediction.labels)
    return {
        "lazy": type(stack).__module__.split(".")[0],
        "ready_rss": ready,
        "peak_rss": peak_rss(),
        "seconds": seconds,
        "forwards": len(forwards),
        "window": forwards[0][-2:],
        "foreground": float((prediction.labels == 1).mean()),
    }


def run_child(path: Path, z: int, tile_size: int | None) -> tuple[dict, np.ndarray]:
    command = [sys.executable, __file__, "--measure", str(path), "--z", str(z), "--tile-size", str(tile_size or 0)]
    row = json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout.splitlines()[-1])
    return row, np.load(path.with_name(f"{path.stem}.labels-{tile_size}.npy"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=80)
    parser.add_argument("--side", type=int, default=4000, help="slice height and width (at most 4096)")
    parser.add_argument("--dir", default=tempfile.gettempdir(), help="where to write the stack (deleted after)")
    parser.add_argument("--untiled", action="store_true", help="also measure one untiled forward")
    parser.add_argument("--measure", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--z", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--tile-size", type=int, default=DEFAULT_TILE_SIZE, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure, args.z, args.tile_size or None)))
        return

    from predict_latency import machine

    stack_bytes = args.frames * args.side * args.side * 2
    free = shutil.disk_usage(args.dir).free
    if free < 1.5 * stack_bytes:
        sys.exit(f"{args.dir} has {free / GIB:.1f} GiB free; the stack needs {stack_bytes / GIB:.1f} GiB.")
    folder = Path(tempfile.mkdtemp(prefix="slicewise-bigstack-", dir=args.dir))
    try:
        path = folder / "stack.tif"
        started = time.perf_counter()
        write_stack(path, args.frames, args.side)
        print(f"machine: {machine()}")
        print(
            f"stack: {args.frames} × {args.side} × {args.side} uint16, uncompressed TIFF, "
            f"{path.stat().st_size / GIB:.2f} GiB on disk (written in {time.perf_counter() - started:.0f} s)"
        )
        z = args.frames // 2
        tiled, tiled_labels = run_child(path, z, DEFAULT_TILE_SIZE)
        rows = [(f"lazy open + tiled predict (tile {DEFAULT_TILE_SIZE})", tiled)]
        if args.untiled:
            untiled, untiled_labels = run_child(path, z, None)
            rows.append(("lazy open + untiled predict", untiled))
    finally:
        shutil.rmtree(folder)
    ready = tiled["ready_rss"]
    naive = ready + 3 * stack_bytes
    print(f"model: {MODEL} on CPU (1 thread), slice z={z}; process after imports and model load: {ready / GIB:.2f} GiB")
    print(f"baseline: naive np.asarray(stack).astype(float32) = process + 3 × stack = {naive / GIB:.2f} GiB (computed)")
    header = f"{'case':<40} {'peak RSS GiB':>12} {'own GiB':>8} {'ratio vs naive':>15} {'seconds':>8} {'forwards':>18}"
    print(header)
    naive_name = "naive whole stack to float32 (computed)"
    print(f"{naive_name:<40} {naive / GIB:>12.2f} {3 * stack_bytes / GIB:>8.2f} {1:>15.2f}")
    for name, row in rows:
        own = row["peak_rss"] - row["ready_rss"]
        windows = f"{row['forwards']} × {row['window'][0]}×{row['window'][1]}"
        print(
            f"{name:<40} {row['peak_rss'] / GIB:>12.2f} {own / GIB:>8.2f} {row['peak_rss'] / naive:>15.3f} "
            f"{row['seconds']:>8.1f} {windows:>18}"
        )
    print(
        f"stack size: {stack_bytes / GIB:.2f} GiB; lazy array type: {tiled['lazy']}; "
        f"foreground fraction of the slice: {tiled['foreground']:.3f}"
    )
    if args.untiled:
        agree = (tiled_labels == untiled_labels).mean()
        print(f"tiled labels agree with untiled on {100 * agree:.2f} % of the slice's pixels")


if __name__ == "__main__":
    main()
