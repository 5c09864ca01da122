"""The CUDA path, measured: every family's forward under autocast, box prompts, teach, Dice on real images.

    python benchmarks/gpu_bench.py [--batch 32] [--repeats 20] [--out gpu_table.md]

Per family (the bundled U-Net, LiteMedSAM, SegFormer MiT-b0 sizes, a U-Net on EfficientNet-Lite0):
the per-slice latency of ``slicewise.predict`` (the precision ``load_model`` chooses on CUDA), the
throughput of a batch of ``--batch`` slices under bf16 and fp16 autocast against a plain fp32 batch-1
loop, and the fraction of the GPU's bf16 dense peak that the batch reaches (FLOPs counted by
``torch.utils.flop_counter``). Dice on the Kvasir-SEG test split for the trained models (the U-Net;
LiteMedSAM with ground-truth boxes). Then a teach round and its prediction, timed. Needs a CUDA GPU.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import warnings

import numpy as np
import torch

warnings.filterwarnings("ignore")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import slicewise  # noqa: E402
from slicewise.core.preprocess import prepare  # noqa: E402
from slicewise.core.prompting import box_from_mask, embedding_cache  # noqa: E402
from slicewise.io.images import read_image  # noqa: E402
from slicewise.io.samples import shared_data_dir, split_stems  # noqa: E402
from slicewise.models.loaded import from_state  # noqa: E402
from slicewise.models.registry import build_model, make_spec  # noqa: E402

# dense bf16 tensor-core peaks in TFLOP/s (vendor data sheets, without sparsity)
BF16_PEAK = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "L4": 121.0, "A10": 125.0, "T4": 65.0}


def peak(name: str) -> float | None:
    return next((value for key, value in BF16_PEAK.items() if key in name), None)


DEVICE = "cuda"


def sync() -> None:
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def timed(fn, repeats: int) -> float:
    fn()
    sync()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def flops(module, x) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        module(x)
    return float(counter.get_total_flops())


def kvasir(count: int = 45):
    root = shared_data_dir() / "kvasir_seg"
    stems = split_stems(root, "test")[:count]
    return [(read_image(root / "images" / f"{s}.png"), read_image(root / "masks" / f"{s}.png")) for s in stems]


def pooled_dice(pairs) -> float:
    hits = sum(int(np.logical_and(a, b).sum()) for a, b in pairs)
    size = sum(int(a.sum() + b.sum()) for a, b in pairs)
    return 2 * hits / size


def families(only: str):
    if "unet" in only:
        yield "unet (polyp_unet)", slicewise.load_model("polyp_unet", device=DEVICE), "plain"
    if "medsam" in only:
        yield "lite_medsam", slicewise.load_model("lite_medsam", device=DEVICE), "box"
    torch.manual_seed(0)
    if "segformer" in only:
        spec = make_spec("segformer", class_names=("background", "polyp"))
        yield "segformer (random init)", from_state(spec, build_model(spec).state_dict(), device=DEVICE), "segformer"
    if "lite0" in only:
        spec = make_spec("timm_unet", class_names=("background", "polyp"), encoder="tf_efficientnet_lite0")
        model = from_state(spec, build_model(spec, pretrained="cache").state_dict(), device=DEVICE)
        yield "timm_unet efficientnet_lite0", model, "plain"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--out")
    parser.add_argument("--images", type=int, default=45)
    parser.add_argument("--only", default="unet,medsam,segformer,lite0", help="families, comma-separated")
    parser.add_argument("--no-teach", action="store_true")
    parser.add_argument("--device", default="cuda", help="cpu: a dry run of this script where there is no GPU")
    args = parser.parse_args(argv)
    global DEVICE
    DEVICE = args.device
    if DEVICE == "cuda" and not torch.cuda.is_available():
        print("no CUDA GPU here: nothing measured")
        return 1
    name = torch.cuda.get_device_name() if DEVICE == "cuda" else "none (dry run on the CPU)"
    top = peak(name)
    lines = [
        f"GPU {name}, torch {torch.__version__}, CUDA {torch.version.cuda}; bf16 dense peak "
        f"{top or '?'} TFLOP/s; batch {args.batch}; median of {args.repeats}",
        "",
        "| family | predict() per slice ms (precision) | fp32 batch-1 loop slices/s | bf16 batch slices/s (×) "
        "| fp16 batch slices/s (×) | bf16 % of peak | Dice (test) |",
        "|---|---|---|---|---|---|---|",
    ]
    print("\n".join(lines), flush=True)
    images = kvasir(args.images)
    for label, model, kind in families(args.only):
        image, mask = images[0]
        net = model.module
        if kind == "box":
            net = model.module.image_encoder
        x1 = torch.from_numpy(prepare(image, model.spec.input))[None].to(DEVICE)
        xb = x1.repeat(args.batch, 1, 1, 1)

        def call(x, net=net, kind=kind):
            return net(pixel_values=x).logits if kind == "segformer" else net(x)

        def predict_once(model=model, kind=kind, image=image, mask=mask):
            if kind == "box":
                embedding_cache(model)._items.clear()
                return slicewise.predict(model, image, box=box_from_mask(mask))
            return slicewise.predict(model, image)

        per_slice = timed(predict_once, args.repeats)
        with torch.inference_mode():
            fp32_loop = timed(lambda call=call, x1=x1: [call(x1) for _ in range(8)], max(3, args.repeats // 4)) / 8

            def under(dtype, call=call, xb=xb):
                with torch.autocast(DEVICE, dtype=dtype):
                    return call(xb)

            bf16 = timed(lambda: under(torch.bfloat16), args.repeats)
            fp16 = timed(lambda: under(torch.float16), args.repeats)
        work = flops(lambda x, call=call: call(x), x1) * args.batch
        share = f"{100 * work / bf16 / 1e12 / top:.1f}" if top else "?"
        dice = "—"
        if kind == "box":
            pairs = []
            for img, msk in images:
                pairs.append((slicewise.predict(model, img, box=box_from_mask(msk)).labels == 1, msk != 0))
            dice = f"{pooled_dice(pairs):.4f} (boxes)"
        elif "polyp_unet" in label:
            dice = f"{pooled_dice([(slicewise.predict(model, img).labels == 1, msk != 0) for img, msk in images]):.4f}"
        row = (
            f"| {label} | {per_slice * 1000:.1f} ({model.precision.name}) | {1 / fp32_loop:.0f} | "
            f"{args.batch / bf16:.0f} ({fp32_loop * args.batch / bf16:.1f}×) | "
            f"{args.batch / fp16:.0f} ({fp32_loop * args.batch / fp16:.1f}×) | {share} | {dice} |"
        )
        print(row, flush=True)
        lines.append(row)
    if not args.no_teach:
        started = time.perf_counter()
        taught = slicewise.teach([i for i, _ in images[:10]], [m for _, m in images[:10]], encoder="tinyvit_litemedsam")
        seconds = time.perf_counter() - started
        rest = [(slicewise.predict(taught, img).labels == 1, msk != 0) for img, msk in images[10:]]
        tail = (
            f"\nteach (10 Kvasir test images, TinyViT head): {seconds:.1f} s on {taught.device}; "
            f"Dice on the other {len(rest)}: {pooled_dice(rest) if rest else float('nan'):.4f}"
        )
        print(tail)
        lines.append(tail)
    if args.out:
        with open(args.out, "w") as file:
            file.write("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
