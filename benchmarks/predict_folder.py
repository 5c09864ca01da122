"""A folder of 100 polyp images, as whole processes: `slicewise predict` against a plain PyTorch loop.

    python benchmarks/predict_folder.py [--images 100] [--repeats 3] [--model polyp_lite0]

The baseline is the loop a person would write: read a PNG, normalise it (slicewise's own
``prepare``, so the pixels are the same), one float32 forward at batch 1, softmax, back to the
image's size (slicewise's ``to_slice``, for models that resize, such as the default), argmax, write a
PNG — in one process, with the network in its plain (contiguous) layout. Against it run
``python -m slicewise predict DIR --out OUT`` at batch 1 and at the default batch of 8 (reader and
writer threads, the precision chosen at load), and at ``--precision fp32``. Every run is a whole
process (imports and model loading included; the model's ONNX graph, where it has one, is exported
once before the timed runs, as a person's first load on a machine does); the variants are
interleaved (A B C D, A B C D, ...) and the median wall time is reported with the load average,
since the machine is shared. The masks of each slicewise run are compared with the baseline's,
file by file and pixel by pixel.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

PLAIN_LOOP = r"""
import sys
from pathlib import Path
import numpy as np, torch
from PIL import Image
import slicewise
from slicewise.core.inference import to_slice
from slicewise.core.preprocess import network_shape, prepare

model = slicewise.load_model(sys.argv[3], device="cpu", precision="fp32")
net = model.module.to(memory_format=torch.contiguous_format).eval()
out = Path(sys.argv[2]); out.mkdir(parents=True, exist_ok=True)
with torch.inference_mode():
    for path in sorted(Path(sys.argv[1]).glob("*.png")):
        image = np.asarray(Image.open(path).convert("RGB"))
        x = torch.from_numpy(prepare(image, model.spec.input))[None]
        height, width = image.shape[:2]
        inner = network_shape(height, width, model.spec.input.size)  # a model that resizes: back to the image
        probabilities = to_slice(torch.softmax(net(x)[0], 0), height, width, inner)
        labels = probabilities.numpy().argmax(0).astype(np.uint8)
        Image.fromarray(labels, mode="L").save(out / path.name)
"""


def polyp_folder(count: int, folder: Path) -> Path:
    """``count`` Kvasir-SEG images (sorted stems, all splits) linked into ``folder``."""
    from slicewise.io.samples import shared_data_dir

    images = sorted((shared_data_dir() / "kvasir_seg" / "images").glob("*.png"))[:count]
    folder.mkdir(parents=True)
    for path in images:
        (folder / path.name).symlink_to(path)
    return folder


def run(command: list[str]) -> float:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    started = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-2000:]}")
    return seconds


def differences(folder: Path, a: Path, b: Path) -> tuple[int, int]:
    """(files whose masks differ, pixels that differ) between two output folders."""
    files = pixels = 0
    for path in sorted(folder.glob("*.png")):
        x, y = np.asarray(Image.open(a / path.name)), np.asarray(Image.open(b / path.name))
        changed = int((x != y).sum())
        files, pixels = files + bool(changed), pixels + changed
    return files, pixels


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--model", default="polyp_lite0", help="the bundled default, or any model name or file")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="slicewise-folder-"))
    try:
        folder = polyp_folder(args.images, work / "in")
        python = sys.executable
        cli = [python, "-m", "slicewise", "predict", str(folder), "--model", args.model, "--device", "cpu"]
        variants = {
            "plain PyTorch loop (fp32, batch 1)": [
                python,
                "-c",
                PLAIN_LOOP,
                str(folder),
                str(work / "plain"),
                args.model,
            ],
            "slicewise predict --batch-size 1": [*cli, "--out", str(work / "b1"), "--batch-size", "1"],
            "slicewise predict (batch 8)": [*cli, "--out", str(work / "b8")],
            "slicewise predict --precision fp32": [*cli, "--out", str(work / "fp32"), "--precision", "fp32"],
        }
        outputs = dict(zip(variants, ("plain", "b1", "b8", "fp32"), strict=True))
        run([python, "-c", f"import slicewise; slicewise.load_model({args.model!r}, device='cpu')"])  # the export
        loads = [os.getloadavg()[0]]
        times: dict[str, list[float]] = {name: [] for name in variants}
        for _ in range(args.repeats):
            for name, command in variants.items():
                times[name].append(run(command))
            loads.append(os.getloadavg()[0])
        base = statistics.median(times["plain PyTorch loop (fp32, batch 1)"])
        print(
            f"{args.images} Kvasir-SEG images, model {args.model}, {os.cpu_count()} cores, median of {args.repeats} "
            f"interleaved runs; load average {min(loads):.2f}-{max(loads):.2f}"
        )
        print()
        print("| run (whole process) | wall s | × plain loop | masks differing from the plain loop |")
        print("|---|---|---|---|")
        for name in variants:
            wall = statistics.median(times[name])
            if outputs[name] == "plain":
                diff = "—"
            else:
                files, pixels = differences(folder, work / "plain", work / outputs[name])
                diff = f"{files} files, {pixels} px"
            print(f"| {name} | {wall:.1f} | {wall / base:.2f} | {diff} |")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
