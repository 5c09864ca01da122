"""GenSeg-style generative augmentation against standard augmentation at 40 labelled images.

A MONAI U-Net (the CPU study's 1.6 M configuration) trains on 40 Kvasir-SEG images taken from
the train split (32 train + 8 validation) at 128 px, for each seed, with

- standard: MONAI flips, 90° rotations, affine, intensity (the training default);
- separate: standard + synthetic pairs from a pix2pix generator pre-trained on the 32 pairs, frozen;
- end_to_end: the same pre-trained generator (reused, not trained again), then updated by the
  segmenter's validation loss through the one-step unrolled hypergradient.

Each model is evaluated through ``slicewise.predict`` on the Kvasir-SEG test split (in-domain)
and the CVC-ClinicDB test split (another hospital). The table gives pooled Dice as mean ± sd over
seeds, the gain over standard, a Wilcoxon signed-rank test over test images (per-image Dice
averaged over seeds, paired with standard) and the wall time of one run (end to end: with the
pre-training it reuses). Results go to
``--out/results.json`` after every run, and finished runs are reused, so the script can be
stopped and started again.

    nice -n 10 .venv/bin/python benchmarks/genseg.py --threads 1 --out /tmp/genseg
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from scipy.stats import wilcoxon

from slicewise.io.samples import shared_data_dir
from slicewise_train.config import TrainConfig
from slicewise_train.evaluate import evaluate
from slicewise_train.generative import GENERATOR_FILE
from slicewise_train.loop import fit, run_finished

UNET = {"channels": [16, 32, 64, 128, 256], "strides": [2, 2, 2, 2], "num_res_units": 2, "norm": "instance"}
VARIANTS = ("standard", "separate", "end_to_end")


def labelled_subset(out: Path, count: int, val: int, seed: int = 0) -> Path:
    """``count`` images of Kvasir-SEG's train split (seeded choice): ``count - val`` train, ``val`` validation."""
    source = shared_data_dir() / "kvasir_seg"
    target = out / "data" / f"kvasir_{count}"
    if (target / "split.json").exists():
        return target
    stems = random.Random(seed).sample(sorted(json.loads((source / "split.json").read_text())["train"]), count)
    for folder in ("images", "masks"):
        (target / folder).mkdir(parents=True, exist_ok=True)
        for stem in stems:
            shutil.copy(source / folder / f"{stem}.png", target / folder / f"{stem}.png")
    shutil.copy(source.parent / "manifest.json", target.parent / "manifest.json")
    (target / "split.json").write_text(json.dumps({"train": stems[val:], "val": stems[:val], "test": []}))
    return target


def config_for(variant: str, data: Path, seed: int, args: argparse.Namespace) -> TrainConfig:
    generative = {
        "generator": args.generator,
        "pretrain_epochs": args.pretrain_epochs,
        "weight": args.weight,
        "end_to_end": variant == "end_to_end",
        "unroll_every": args.unroll_every,
    }
    return TrainConfig(
        data=(str(data),),
        arch="unet",
        init_kwargs=UNET,
        name=f"unet_{variant}",
        size=128,
        epochs=args.epochs,
        batch_size=8,
        lr_grid=(args.lr,),
        loss="dice_ce",
        patience=0,
        seed=seed,
        augmentation="standard" if variant == "standard" else "generative",
        generative=generative,
        device="cpu",
    )


def run_one(variant: str, data: Path, seed: int, args: argparse.Namespace) -> dict:
    folder = args.out / "runs" / f"{variant}_s{seed}"
    record_file = folder / "benchmark.json"
    if run_finished(folder) and record_file.exists():
        return json.loads(record_file.read_text())
    if folder.exists():
        shutil.rmtree(folder)  # an interrupted run starts again: its time would be wrong otherwise
    folder.mkdir(parents=True)
    pretrained = args.out / "runs" / f"separate_s{seed}" / GENERATOR_FILE
    if variant == "end_to_end" and pretrained.exists():
        shutil.copy(pretrained, folder / GENERATOR_FILE)  # the same pre-trained generator as "separate"
    started = time.time()
    checkpoint = fit(config_for(variant, data, seed, args), folder)
    seconds = time.time() - started
    history = json.loads((folder / "history.json").read_text())
    generative = history.get("generative") or {}
    record = {
        "variant": variant,
        "seed": seed,
        "fit_seconds": seconds,
        "pretrain_seconds": generative.get("pretrain_seconds"),
        "pretrain_reused": generative.get("reused_pretrained"),
        "best_epoch": history["best_epoch"],
        "val_dice": history["val_dice"],
        "test": {},
    }
    for name in ("kvasir_seg", "cvc_clinicdb"):
        evaluation = evaluate(checkpoint, shared_data_dir() / name, "test")
        record["test"][name] = {"pooled_dice": evaluation.pooled_dice, "per_image": evaluation.per_image("dice")}
    record_file.write_text(json.dumps(record))
    return record


def table(records: list[dict]) -> str:
    """Pooled test Dice mean ± sd over seeds, gain over standard, Wilcoxon over images, time per run."""
    lines = [
        "| variant | seeds | Kvasir test Dice | Δ | p | CVC test Dice (other hospital) | Δ | p | minutes per run "
        "(of it generator pre-training) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    by_variant = {v: [r for r in records if r["variant"] == v] for v in VARIANTS}
    baseline = by_variant["standard"]
    for variant, runs in by_variant.items():
        if not runs:
            continue
        cells = [variant, str(len(runs))]
        for name in ("kvasir_seg", "cvc_clinicdb"):
            pooled = [r["test"][name]["pooled_dice"] for r in runs]
            sd = statistics.stdev(pooled) if len(pooled) > 1 else 0.0
            cells.append(f"{np.mean(pooled):.3f} ± {sd:.3f}")
            if variant == "standard" or not baseline:
                cells += ["—", "—"]
                continue
            base = np.mean([r["test"][name]["pooled_dice"] for r in baseline])
            cells.append(f"{np.mean(pooled) - base:+.3f}")
            seeds = sorted({r["seed"] for r in runs} & {r["seed"] for r in baseline})
            mine = _per_image_mean([r for r in runs if r["seed"] in seeds], name)
            theirs = _per_image_mean([r for r in baseline if r["seed"] in seeds], name)
            stems = sorted(mine)
            differences = [mine[s] - theirs[s] for s in stems]
            p = wilcoxon(differences).pvalue if any(differences) else 1.0
            cells.append(f"{p:.2g}")
        cells.append(f"{np.mean([_run_seconds(r) for r in runs]) / 60:.1f} ({_pretrain_minutes(runs)})")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _run_seconds(record: dict) -> float:
    """A run's whole cost: its fit, plus the pre-training it reused from the separate run (end to end)."""
    return record["fit_seconds"] + (record["pretrain_seconds"] or 0.0) * bool(record["pretrain_reused"])


def _pretrain_minutes(runs: list[dict]) -> str:
    seconds = [r["pretrain_seconds"] for r in runs if r["pretrain_seconds"]]
    return f"{np.mean(seconds) / 60:.1f}" if seconds else "0"


def _per_image_mean(runs: list[dict], name: str) -> dict[str, float]:
    stems = runs[0]["test"][name]["per_image"]
    return {s: float(np.mean([r["test"][name]["per_image"][s] for r in runs])) for s in stems}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("/tmp/genseg_benchmark"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--images", type=int, default=40, help="labelled images (the last 8 of them validate)")
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--generator", default="small")
    parser.add_argument("--pretrain-epochs", type=int, default=100)
    parser.add_argument("--weight", type=float, default=1.0, help="λ, the weight of the synthetic pairs")
    parser.add_argument("--unroll-every", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--table", action="store_true", help="only print the table of --out/results.json")
    args = parser.parse_args()
    if args.table:
        print(table(json.loads((args.out / "results.json").read_text())["runs"]))
        return
    torch.set_num_threads(args.threads)
    data = labelled_subset(args.out, args.images, 8)
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    records = []
    started = time.time()
    for seed in args.seeds:
        for variant in args.variants:
            record = run_one(variant, data, seed, args)
            records.append(record)
            print(
                f"{variant:<11} seed {seed}: Kvasir {record['test']['kvasir_seg']['pooled_dice']:.3f}  "
                f"CVC {record['test']['cvc_clinicdb']['pooled_dice']:.3f}  {_run_seconds(record) / 60:.1f} min  "
                f"(elapsed {(time.time() - started) / 60:.1f} min)",
                flush=True,
            )
            (args.out / "results.json").write_text(json.dumps({"settings": settings, "runs": records}, indent=1))
    print(f"\nU-Net, {args.images} labelled Kvasir-SEG images at 128 px, torch threads {args.threads}:\n")
    print(table(records))


if __name__ == "__main__":
    main()
