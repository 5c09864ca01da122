"""LiteMedSAM box prompts on the Kvasir-SEG test split: Dice and latency, through slicewise's own path.

Each test image is prompted with its ground-truth box (the tight box around every polyp pixel).
Rows:
- official pipeline (the baseline): a plain reimplementation of LiteMedSAM's published inference
  (long side → 256 with area resampling, min-max to [0, 1], pad bottom/right, encoder + decoder,
  upsample, crop, resize, sigmoid > 0.5) on the same network and weights;
- slicewise: ``slicewise.predict(model, image, box=...)``, the path the widget uses.
Latency rows: a first prompt on a slice (encoder + decoder) against a further prompt on the
same slice (the embedding cached, decoder only). Ratios are against the baseline row.

    python benchmarks/prompt_kvasir.py [--device cpu|cuda] [--split test] [--limit N]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from predict_latency import machine, percentiles  # noqa: E402

import slicewise  # noqa: E402
from slicewise.io.images import read_image  # noqa: E402
from slicewise.io.samples import shared_data_dir, split_stems  # noqa: E402


def gt_box(mask: np.ndarray) -> tuple[float, float, float, float]:
    rows, cols = np.nonzero(mask)
    return float(cols.min()), float(rows.min()), float(cols.max()), float(rows.max())


def dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a != 0, b != 0
    total = a.sum() + b.sum()
    return 1.0 if total == 0 else float(2 * (a & b).sum() / total)


def official(model: slicewise.LoadedModel, image: np.ndarray, box: tuple[float, ...]) -> np.ndarray:
    """LiteMedSAM's published inference, reimplemented plainly (PIL's box filter as INTER_AREA)."""
    height, width = image.shape[:2]
    scale = 256 / max(height, width)
    new_h, new_w = int(height * scale + 0.5), int(width * scale + 0.5)
    rgb = np.repeat(image[..., None], 3, -1) if image.ndim == 2 else image[..., :3]
    small = np.asarray(Image.fromarray(rgb).resize((new_w, new_h), Image.BOX), dtype=np.float32)
    small = (small - small.min()) / max(small.max() - small.min(), 1e-8)
    padded = np.zeros((256, 256, 3), np.float32)
    padded[:new_h, :new_w] = small
    x = torch.from_numpy(padded).permute(2, 0, 1)[None].to(model.device)
    box256 = torch.tensor([[v * scale for v in box]], device=model.device)
    net = model.module
    with torch.inference_mode():
        embedding = net.image_encoder(x)
        sparse, dense = net.prompt_encoder(points=None, boxes=box256[:, None], masks=None)
        low_res, _ = net.mask_decoder(
            image_embeddings=embedding,
            image_pe=net.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=False,
        )
        logits = F.interpolate(low_res, (256, 256), mode="bilinear", align_corners=False)[..., :new_h, :new_w]
        logits = F.interpolate(logits, (height, width), mode="bilinear", align_corners=False)
    return (torch.sigmoid(logits)[0, 0] > 0.5).cpu().numpy().astype(np.uint8)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--split", default="test")
    parser.add_argument("--limit", type=int, default=0, help="only the first N images (0: all)")
    parser.add_argument("--json", help="also write the figures to this JSON file")
    args = parser.parse_args()

    root = shared_data_dir() / "kvasir_seg"
    stems = split_stems(root, args.split)
    stems = stems[: args.limit] if args.limit else stems
    model = slicewise.load_model("lite_medsam", device=args.device)
    scores: dict[str, list[float]] = {"official": [], "slicewise": []}
    first, cached, baseline_times = [], [], []
    for stem in stems:
        image = read_image(root / "images" / f"{stem}.png")
        mask = read_image(root / "masks" / f"{stem}.png") != 0
        box = gt_box(mask)
        started = time.perf_counter()
        scores["official"].append(dice(official(model, image, box), mask))
        baseline_times.append(time.perf_counter() - started)
        started = time.perf_counter()
        prediction = slicewise.predict(model, image, box=box)
        first.append(time.perf_counter() - started)
        scores["slicewise"].append(dice(prediction.labels, mask))
        shifted = (box[0] + 2, box[1] + 2, box[2] - 2, box[3] - 2)  # a second, slightly different box
        started = time.perf_counter()
        slicewise.predict(model, image, box=shifted)
        cached.append(time.perf_counter() - started)

    base_p50, base_p95 = percentiles(baseline_times)
    print(f"LiteMedSAM box prompts, kvasir_seg {args.split} ({len(stems)} images, ground-truth boxes)")
    print(f"machine: {machine()}, device {model.device.type}\n")
    print("| path | mean Dice | median Dice | ratio to official |")
    print("|---|---|---|---|")
    for name in ("official", "slicewise"):
        values = np.asarray(scores[name])
        ratio = values.mean() / np.mean(scores["official"])
        print(f"| {name} | {values.mean():.4f} | {np.median(values):.4f} | {ratio:.3f} |")
    print("\n| latency per prompt | p50 ms | p95 ms | ratio to official |")
    print("|---|---|---|---|")
    rows = {"official (encoder + decoder)": baseline_times, "slicewise, first prompt on a slice": first}
    rows["slicewise, next prompt (embedding cached)"] = cached
    for name, times in rows.items():
        p50, p95 = percentiles(times)
        print(f"| {name} | {p50:.1f} | {p95:.1f} | {p50 / base_p50:.3f} |")
    if args.json:
        figures = {
            "images": len(stems),
            "split": args.split,
            "machine": machine(),
            "dice_mean": {k: float(np.mean(v)) for k, v in scores.items()},
            "latency_p50_ms": {k: percentiles(v)[0] for k, v in rows.items()},
            "baseline_p95_ms": base_p95,
        }
        Path(args.json).write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
