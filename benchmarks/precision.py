"""Precision and runtime per model family on this CPU: latency and Dice change on real test images.

    python benchmarks/precision.py [--images 45] [--repeats 5] [--threads 1] [--families unet lite0 ...]

Families: the bundled U-Net (polyp_unet), the bundled default polyp_lite0 (arch timm_unet: smp's U-Net
decoder on EfficientNet-Lite0, 128 px), LiteMedSAM's TinyViT image encoder (box-prompted Dice through
the fp32 decoder), SegFormer (MiT-b0 sizes) and timm_unet on its default ConvNeXt-atto encoder.
Variants: PyTorch fp32 (contiguous), channels-last, bfloat16 autocast, int8 dynamic quantisation of the
Linear layers, ONNX Runtime fp32 (the graph exported by slicewise.models.precision.onnx_twin).

Latency: forwards of one Kvasir-SEG test image, the variants interleaved (A B C A B C ...) so the load of
a shared machine hits all alike; median. Dice: on the Kvasir-SEG test split, for every variant that was
faster than fp32 (a slower one is never chosen). SegFormer and the ConvNeXt-atto U-Net have no
trained weights offline, so their "Dice" is the agreement of each variant's mask with fp32's own mask.
The last table is the issue's goal: a first LiteMedSAM box on a new slice as slicewise runs it (chosen
precision) against a plain fp32 PyTorch forward of the same encoder, interleaved in the same run.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

warnings.filterwarnings("ignore")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import slicewise  # noqa: E402
from slicewise.core.inference import probabilities_from_logits, to_slice  # noqa: E402
from slicewise.core.preprocess import network_shape, prepare  # noqa: E402
from slicewise.core.prompting import Prompt, SliceEmbedding, box_from_mask, decode, embedding_cache  # noqa: E402
from slicewise.io.images import read_image  # noqa: E402
from slicewise.io.samples import shared_data_dir, split_stems  # noqa: E402
from slicewise.models import precision  # noqa: E402
from slicewise.models.loaded import from_state  # noqa: E402
from slicewise.models.registry import build_model, make_spec  # noqa: E402

Forward = Callable[[torch.Tensor], torch.Tensor]


def test_images(count: int) -> list[tuple[np.ndarray, np.ndarray]]:
    root = shared_data_dir() / "kvasir_seg"
    stems = split_stems(root, "test")[:count]
    return [(read_image(root / "images" / f"{s}.png"), read_image(root / "masks" / f"{s}.png")) for s in stems]


def dice(a: np.ndarray, b: np.ndarray) -> tuple[int, int]:
    return int(np.logical_and(a, b).sum()), int(a.sum() + b.sum())


def variants(module: torch.nn.Module, example: torch.Tensor, skip: set[str], any_size: bool) -> dict[str, Forward]:
    """name → a forward of ``module`` in that precision/runtime (module is fp32, eval)."""
    module = module.eval().to(memory_format=torch.contiguous_format)
    out: dict[str, Forward] = {"fp32": module}
    if "channels_last" not in skip:
        last = copy.deepcopy(module).to(memory_format=torch.channels_last)
        out["channels_last"] = lambda x: last(x.contiguous(memory_format=torch.channels_last))

    def bf16(x: torch.Tensor) -> torch.Tensor:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return module(x)

    if "bf16" not in skip:
        out["bf16"] = bf16
    if "int8" not in skip and any(isinstance(m, torch.nn.Linear) for m in module.modules()):
        out["int8"] = torch.ao.quantization.quantize_dynamic(
            copy.deepcopy(module), {torch.nn.Linear}, dtype=torch.qint8
        )
    if "onnx" not in skip:
        out["onnx"] = precision.onnx_twin(
            module, tuple(example.shape), threads=torch.get_num_threads(), any_size=any_size
        )
    return out


def time_interleaved(forwards: dict[str, Forward], x: torch.Tensor, repeats: int) -> dict[str, float]:
    times: dict[str, list[float]] = {name: [] for name in forwards}
    with torch.inference_mode():
        for forward in forwards.values():
            forward(x)  # warm-up
        for _ in range(repeats):
            for name, forward in forwards.items():
                started = time.perf_counter()
                forward(x)
                times[name].append(time.perf_counter() - started)
    return {name: statistics.median(values) for name, values in times.items()}


class Family:
    """A network to measure: its forwards on prepared slices and how a mask is read from its output."""

    def __init__(self, name: str, model: slicewise.LoadedModel, part: torch.nn.Module, trained: bool) -> None:
        self.name, self.model, self.part, self.trained = name, model, part, trained

    def masks(self, forward: Forward, images: list[tuple[np.ndarray, np.ndarray]]) -> list[np.ndarray]:
        model, out = self.model, []
        with torch.inference_mode():
            for image, mask in images:
                x = torch.from_numpy(prepare(image, model.spec.input))[None]
                height, width = image.shape[:2]
                inner = network_shape(height, width, model.spec.input.size)
                if self.name == "tinyvit":
                    features = forward(x).float()
                    scale = model.spec.input.size / max(height, width)
                    embedding = SliceEmbedding(features, height, width, inner, scale)
                    out.append(decode(model, embedding, Prompt(box=box_from_mask(mask))).argmax(0).numpy() == 1)
                    continue
                logits = model.adapter.logits(_Call(forward), x).float()
                probabilities = probabilities_from_logits(logits, model.spec.output.activation)[0]
                out.append(to_slice(probabilities, height, width, inner).argmax(0).numpy() == 1)
        return out


class _Call(torch.nn.Module):
    """A forward callable dressed as a module, so the adapter's ``logits`` can run it."""

    def __init__(self, forward: Forward) -> None:
        super().__init__()
        self.forward_ = forward

    def forward(self, *args: torch.Tensor, **kwargs: torch.Tensor) -> torch.Tensor:
        return self.forward_(*args, **kwargs)


def _wrap_transformers(module: torch.nn.Module) -> torch.nn.Module:
    """SegFormer called positionally (for export and timing); the adapter calls it with pixel_values."""

    class Positional(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = module

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.inner(pixel_values=x).logits

    return Positional().eval()


def families(names: list[str]) -> list[Family]:
    found = []
    torch.manual_seed(0)
    if "unet" in names:
        model = slicewise.load_model("polyp_unet", device="cpu", precision="fp32")
        found.append(Family("unet", model, model.module, trained=True))
    if "tinyvit" in names:
        model = slicewise.load_model("lite_medsam", device="cpu", precision="fp32")
        found.append(Family("tinyvit", model, model.module.image_encoder, trained=True))
    if "segformer" in names:
        spec = make_spec("segformer", class_names=("background", "polyp"))
        model = from_state(spec, build_model(spec).state_dict(), device="cpu")
        found.append(Family("segformer", model, _wrap_transformers(model.module), trained=False))
    if "lite0" in names:
        model = slicewise.load_model("polyp_lite0", device="cpu", precision="fp32")
        found.append(Family("lite0", model, model.module, trained=True))
    if "convnext_atto" in names:
        spec = make_spec("timm_unet", class_names=("background", "polyp"), size=128)
        model = from_state(spec, build_model(spec).state_dict(), device="cpu")
        found.append(Family("convnext_atto", model, model.module, trained=False))
    return found


def run_family(family: Family, images, repeats: int) -> list[tuple[str, str, float, float, str]]:
    model = family.model
    example = torch.from_numpy(prepare(images[0][0], model.spec.input))[None]
    skip = {"channels_last"} if family.name == "tinyvit" else set()
    forwards = variants(family.part, example, skip, any_size=family.name != "tinyvit")
    # bf16 without native units is emulated: time it once (it can take minutes), never for Dice
    slow = {}
    if not precision.cpu_features().bf16 and "bf16" in forwards:
        with torch.inference_mode():
            started = time.perf_counter()
            forwards.pop("bf16")(example)
            slow["bf16"] = time.perf_counter() - started
    latency = time_interleaved(forwards, example, repeats) | slow
    base = latency["fp32"]
    rows = []
    if family.trained:
        reference = [mask != 0 for _, mask in images]
    else:
        reference = family.masks(_as_logits(family, forwards["fp32"]), images)
    for name in latency:
        score = "—"
        if name in forwards and (name == "fp32" or latency[name] < base):
            predicted = family.masks(_as_logits(family, forwards[name]), images)
            i, t = map(sum, zip(*(dice(p, r) for p, r in zip(predicted, reference, strict=True)), strict=True))
            score = f"{2 * i / t:.4f}"
        rows.append((family.name, name, latency[name], latency[name] / base, score))
    if family.trained:  # report the change against fp32
        fp32_dice = float(rows[0][4])
        rows = [(*r[:4], r[4] if r[4] == "—" else f"{r[4]} ({float(r[4]) - fp32_dice:+.4f})") for r in rows]
    return rows


def _as_logits(family: Family, forward: Forward) -> Forward:
    if family.name == "segformer":  # the adapter calls model(pixel_values=x).logits
        return lambda pixel_values: type("Out", (), {"logits": forward(pixel_values)})()
    return forward


def first_box(repeats: int, images) -> tuple[float, float, str]:
    """A first box on a new slice as slicewise runs it (chosen precision) vs a plain fp32 encoder forward."""
    chosen = slicewise.load_model("lite_medsam", device="cpu")
    plain = slicewise.load_model("lite_medsam", device="cpu", precision="fp32").module.image_encoder
    box_times, plain_times = [], []
    with torch.inference_mode():
        for i in range(repeats):
            image, mask = images[i % len(images)]
            embedding_cache(chosen)._items.clear()  # a new slice: nothing cached
            started = time.perf_counter()
            slicewise.predict(chosen, image, box=box_from_mask(mask))
            box_times.append(time.perf_counter() - started)
            x = torch.from_numpy(prepare(image, chosen.spec.input))[None]
            started = time.perf_counter()
            plain(x)
            plain_times.append(time.perf_counter() - started)
    return statistics.median(box_times), statistics.median(plain_times), chosen.precision.describe()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=45, help="Kvasir-SEG test images for Dice (at most 45)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--families", nargs="+", default=["unet", "lite0", "tinyvit", "segformer", "convnext_atto"])
    parser.add_argument("--out", help="also write the tables as Markdown here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    features = precision.cpu_features()
    head = [
        f"CPU {features.model or '?'}: {features.describe()}; torch {torch.__version__}, {args.threads} thread(s); "
        f"load average before {os.getloadavg()[0]:.2f}",
        "",
        "| family | variant | latency (s) | × fp32 | Dice (change) |",
        "|---|---|---|---|---|",
    ]
    print("\n".join(head), flush=True)
    lines = list(head)
    images = test_images(args.images)
    for family in families(args.families):
        for row in run_family(family, images, args.repeats):
            line = f"| {row[0]} | {row[1]} | {row[2]:.3f} | {row[3]:.2f} | {row[4]} |"
            print(line, flush=True)
            lines.append(line)
    if "tinyvit" in args.families:
        box, plain, described = first_box(max(3, args.repeats), images)
        tail = [
            "",
            "| first LiteMedSAM box on a new slice | s |",
            "|---|---|",
            f"| plain fp32 PyTorch encoder forward | {plain:.3f} |",
            f"| slicewise predict(box=...) as loaded ({described}) | {box:.3f} ({box / plain:.2f}×) |",
        ]
        print("\n".join(tail), flush=True)
        lines += tail
    lines.append(f"\nload average after {os.getloadavg()[0]:.2f}")
    print(lines[-1])
    if args.out:
        Path(args.out).write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
