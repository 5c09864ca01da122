"""Training throughput (images per second) of slicewise_train's loop against a plain PyTorch loop.

Same network (the protocol's UNet), same Kvasir-SEG training images at the same size, same
batch size and optimiser:
- plain loop (the baseline): the prepared images as one tensor, shuffled batches,
  ``CrossEntropyLoss``, ``AdamW``, nothing else;
- slicewise_train: ``train_once`` as ``fit`` runs it: MONAI augmentation on the fly, the REX
  schedule, per-epoch reseeding, validation Dice after every epoch and the atomic
  ``last.safetensors`` with optimiser state (its cost is part of what is measured).
On CUDA both run with float16 autocast and a GradScaler. The ratio is ours / plain (1.0 = no
overhead; below 1 means we are slower).

    python benchmarks/train_throughput.py [--device cpu|cuda] [--epochs 3] [--size 128]
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

import torch
from predict_latency import machine

from slicewise.io.samples import shared_data_dir
from slicewise.models.loaded import resolve_device
from slicewise_train.config import TrainConfig
from slicewise_train.loop import Distributed, prepare_run, train_once

UNET = {"channels": [16, 32, 64, 128, 256], "strides": [2, 2, 2, 2], "num_res_units": 2, "norm": "instance"}


def plain_loop(config: TrainConfig, device: torch.device, epochs: int) -> tuple[float, int]:
    """Seconds and images for ``epochs`` of the textbook loop on the same prepared data."""
    setup = prepare_run(dataclasses.replace(config, augmentation="none"), device)
    images = torch.stack([setup.train_set[i][0] for i in range(len(setup.train_set))]).to(device)
    labels = torch.stack([setup.train_set[i][1] for i in range(len(setup.train_set))])[:, 0].to(device)
    model = setup.model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=config.weight_decay)
    loss_fn = torch.nn.CrossEntropyLoss()
    use_amp = device.type == "cuda"
    autocast = torch.autocast("cuda", dtype=torch.float16) if use_amp else nullcontext()
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    _synchronize(device)
    started = time.perf_counter()
    for _ in range(epochs):
        order = torch.randperm(len(images), device=device)
        for start in range(0, len(images), config.batch_size):
            batch = order[start : start + config.batch_size]
            optimizer.zero_grad(set_to_none=True)
            with autocast:
                loss = loss_fn(model(images[batch]).float(), labels[batch])
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
    _synchronize(device)
    return time.perf_counter() - started, epochs * len(images)


def our_loop(config: TrainConfig, device: torch.device, epochs: int) -> tuple[float, int]:
    setup = prepare_run(config, device)
    with tempfile.TemporaryDirectory() as out:
        _synchronize(device)
        started = time.perf_counter()
        train_once(config, setup, 1e-3, epochs, Path(out), device, Distributed())
        _synchronize(device)
        return time.perf_counter() - started, epochs * len(setup.train_set)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--size", type=int, default=128)
    args = parser.parse_args()
    device = resolve_device(args.device)
    config = TrainConfig(
        data=(str(shared_data_dir() / "kvasir_seg"),),
        arch="unet",
        init_kwargs=UNET,
        size=args.size,
        lr_grid=(),
        patience=0,
        device=str(device),
    )
    plain_loop(config, device, 1)  # warm-up: allocator, kernels, MONAI imports
    rows = [("plain PyTorch loop", *plain_loop(config, device, args.epochs))]
    rows.append(("slicewise_train loop", *our_loop(config, device, args.epochs)))
    baseline = rows[0][2] / rows[0][1]
    print(f"machine: {machine()}")
    print(f"UNet 1.6 M params, kvasir_seg train (210 images) at {args.size}², batch 8, {args.epochs} epochs, {device}")
    print(f"{'loop':<22} {'seconds':>8} {'images/s':>9} {'ratio':>6}")
    for name, seconds, images in rows:
        rate = images / seconds
        print(f"{name:<22} {seconds:>8.1f} {rate:>9.1f} {rate / baseline:>5.2f}×")


if __name__ == "__main__":
    main()
