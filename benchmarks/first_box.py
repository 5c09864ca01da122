"""The first LiteMedSAM box on a new slice, with and without the slice's embedding prefetched.

Rows, measured on each Kvasir-SEG test image in turn (their order rotating from image to image),
in one process:
- plain (the baseline): a plain fp32 PyTorch forward of LiteMedSAM's TinyViT image encoder;
- first box, no prefetch: ``slicewise.predict(model, image, box=...)`` with nothing cached, as the
  model loads (encoder in ONNX Runtime fp32 on this CPU, then the decoder);
- first box, prefetched: the same box after the slice was embedded ahead, as the prompt panel
  does when the person moves to the slice: the wait from box to mask (prompt encoder + decoder);
- the prefetch itself: the encoder work that moved to when the slice is viewed.
Both box rows prompt with the ground-truth box; their Dice and masks are compared.

    nice python benchmarks/first_box.py [--images 10] [--threads 1]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from predict_latency import machine  # noqa: E402

import slicewise  # noqa: E402
from slicewise.core.features import FEATURES  # noqa: E402
from slicewise.core.metrics import dice_score  # noqa: E402
from slicewise.core.preprocess import prepare  # noqa: E402
from slicewise.core.prompting import embed, embedding_cache  # noqa: E402
from slicewise.io.images import read_image  # noqa: E402
from slicewise.io.samples import shared_data_dir, split_stems  # noqa: E402

ROWS = ("plain", "cold", "prefetch", "warm")
LABELS = {
    "plain": "plain fp32 PyTorch forward of the TinyViT encoder (baseline)",
    "cold": "first box, no prefetch (encoder + decoder)",
    "warm": "first box, slice prefetched: box drawn → mask",
    "prefetch": "the prefetch itself (runs when the slice is viewed)",
}


def gt_box(mask: np.ndarray) -> tuple[float, float, float, float]:
    """The tight box around every object pixel, (x0, y0, x1, y1)."""
    rows, cols = np.nonzero(mask)
    return float(cols.min()), float(rows.min()), float(cols.max()), float(rows.max())


def forget(model: slicewise.LoadedModel) -> None:
    """Make every slice new again: no embedding and no shared encoder features cached."""
    embedding_cache(model).clear()
    FEATURES.clear()


def timed(run) -> tuple[float, object]:
    started = time.perf_counter()
    result = run()
    return time.perf_counter() - started, result


def measure(model: slicewise.LoadedModel, image: np.ndarray, mask: np.ndarray, order: list[str]) -> dict:
    """Seconds of each row on one image (in ``order``), and the two box predictions."""
    box, encoder = gt_box(mask), model.module.image_encoder
    batch = torch.from_numpy(prepare(image, model.spec.input))[None]
    seconds, masks = {}, {}
    for row in order:
        if row == "plain":
            with torch.inference_mode():
                seconds["plain"], _ = timed(lambda: encoder(batch))
        elif row == "cold":
            forget(model)
            seconds["cold"], masks["cold"] = timed(lambda: slicewise.predict(model, image, box=box).labels)
        else:  # the prefetch, then the box on the prefetched slice
            forget(model)
            seconds["prefetch"], _ = timed(lambda: embed(model, image))
            seconds["warm"], masks["warm"] = timed(lambda: slicewise.predict(model, image, box=box).labels)
    return {"seconds": seconds, "masks": masks}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=10, help="Kvasir-SEG test images (at most 45)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    root = shared_data_dir() / "kvasir_seg"
    stems = split_stems(root, "test")[: args.images]
    model = slicewise.load_model("lite_medsam", device="cpu")
    warmup = read_image(root / "images" / f"{stems[0]}.png"), read_image(root / "masks" / f"{stems[0]}.png")
    measure(model, *warmup, ["plain", "cold", "warm"])  # first calls initialise lazily: not counted
    load_before = os.getloadavg()
    times: dict[str, list[float]] = {row: [] for row in ROWS}
    dice: dict[str, list[float]] = {"cold": [], "warm": []}
    same = 0
    orders = (["plain", "cold", "warm"], ["cold", "warm", "plain"], ["warm", "plain", "cold"])
    for i, stem in enumerate(stems):
        image, mask = read_image(root / "images" / f"{stem}.png"), read_image(root / "masks" / f"{stem}.png")
        result = measure(model, image, mask, orders[i % 3])
        for row, value in result["seconds"].items():
            times[row].append(value)
        for row in dice:
            dice[row].append(dice_score(result["masks"][row], mask != 0, 2))
        same += bool(np.array_equal(result["masks"]["cold"], result["masks"]["warm"]))
        print(f"{stem}: " + ", ".join(f"{row} {value:.3f} s" for row, value in result["seconds"].items()), flush=True)
    load_after = os.getloadavg()
    base = statistics.median(times["plain"])
    print(f"\nFirst LiteMedSAM box on a new slice, kvasir_seg test ({len(stems)} images, ground-truth boxes)")
    print(f"machine: {machine()}; precision as loaded: {model.precision.describe()}")
    print(f"load average (1 min) {load_before[0]:.2f} before, {load_after[0]:.2f} after\n")
    print("| row | median s | max s | × plain encoder |\n|---|---|---|---|")
    for row in ("plain", "cold", "warm", "prefetch"):
        print(
            f"| {LABELS[row]} | {statistics.median(times[row]):.3f} | {max(times[row]):.3f} "
            f"| {statistics.median(times[row]) / base:.3f} |"
        )
    print(
        f"\nbox Dice: no prefetch {np.mean(dice['cold']):.4f}, prefetched {np.mean(dice['warm']):.4f}; "
        f"identical masks on {same} of {len(stems)} images"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
