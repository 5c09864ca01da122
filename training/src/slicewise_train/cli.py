"""``slicewise-train``: fit, evaluate and export models for the slicewise plugin."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from slicewise.cli import run_command
from slicewise.errors import SlicewiseError
from slicewise_train.config import TrainConfig, bound_epochs


def _cmd_fit(args: argparse.Namespace) -> int:
    from slicewise_train.protocol import fit_and_report

    config = TrainConfig.from_file(args.config) if args.config else TrainConfig(data=tuple(args.data or ()))
    overrides = {
        "data": tuple(args.data) if args.data else None,
        "arch": args.model,
        "lr_grid": (args.lr,) if args.lr else None,
        "folds": args.folds,
        "device": args.device,
    }
    config = dataclasses.replace(config, **{k: v for k, v in overrides.items() if v is not None})
    if args.epochs is not None:
        if args.epochs < 1:
            raise SlicewiseError(f"--epochs must be at least 1, got {args.epochs}.")
        config = bound_epochs(config, args.epochs)  # --epochs bounds the whole run, learning-rate grid included
    if not config.data:
        raise SlicewiseError("Give at least one dataset with --data DIR (or a config file that names one).")
    checkpoint = fit_and_report(config, args.out, resume=args.resume)
    print(f"model:  {checkpoint}\nreport: {Path(args.out) / 'report.md'}")
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from slicewise_train.evaluate import evaluate

    results = [evaluate(args.model, data, args.split).as_dict() for data in args.data]
    if args.json:
        print(json.dumps(results if len(results) > 1 else results[0], indent=2))
    else:
        for r in results:
            print(
                f"{r['dataset']:<14} {r['split']:<5} {r['images']:>4} images  Dice {r['dice']:.4f} pooled, "
                f"{r['per_image_mean']['dice']:.4f} per image  IoU {r['iou']:.4f}  HD95 {r['hd95']:.1f} px  "
                f"NSD {r['nsd']:.4f} ({r['units']['nsd_tolerance']})"
            )
    return 0


def _cmd_protocol(args: argparse.Namespace) -> int:
    from slicewise_train.protocol import run_protocol

    print(f"report: {run_protocol(args.file, args.out)}")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from slicewise_train.export import export

    path, evaluations = export(args.checkpoint, args.out, args.evaluate_on, use=args.use)
    for e in evaluations:
        print(f"{e.dataset:<14} test Dice {e.pooled_dice:.4f} (pooled), {e.mean_dice:.4f} (mean per image)")
    print(path)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="slicewise-train", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("fit", help="train a registry architecture on shared-layout datasets")
    p.add_argument("--data", action="append", help="dataset folder (images/, masks/, split.json); repeatable")
    p.add_argument("--model", help="registry architecture name (slicewise models --architectures)")
    p.add_argument("--epochs", type=int, help="the most epochs the whole run trains, learning-rate grid included")
    p.add_argument("--lr", type=float, help="one learning rate instead of the config's grid search")
    p.add_argument("--folds", type=int, help="k-fold cross-validation over train+val (k >= 2)")
    p.add_argument("--device", help="auto (default), cpu or cuda")
    p.add_argument("--config", help="JSON file with TrainConfig fields (configs/study.json: the study's protocol)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run in --out")
    p.add_argument("--out", required=True, help="run folder: model.safetensors, metrics.json, report.md")
    p.set_defaults(run=_cmd_fit)
    p = sub.add_parser("evaluate", help="Dice, IoU, HD95, NSD of a checkpoint on a split, through slicewise.predict")
    p.add_argument("--model", required=True, help="bundled model name or .safetensors file")
    p.add_argument("--data", action="append", required=True)
    p.add_argument("--split", default="test")
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=_cmd_evaluate)
    p = sub.add_parser("export", help="evaluate on test splits and write a plugin checkpoint with the figures")
    p.add_argument("checkpoint")
    p.add_argument(
        "--evaluate-on",
        action="append",
        required=True,
        help="dataset folder; the first is the training set",
    )
    p.add_argument("--out", required=True)
    p.add_argument("--use", help="one line on when to choose the model (fast / accurate), shown by `slicewise models`")
    p.set_defaults(run=_cmd_export)
    p = sub.add_parser("protocol", help="every model on every dataset, cross-dataset matrix and one report")
    p.add_argument("file", help="protocol JSON (training/protocols/cpu_study.json)")
    p.add_argument("--out", required=True, help="folder for runs/, metrics.json, report.md and plots/")
    p.set_defaults(run=_cmd_protocol)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``slicewise-train``."""
    return run_command(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
