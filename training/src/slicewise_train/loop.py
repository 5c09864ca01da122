"""The training loop: AdamW, REX (or cosine), CE (or Dice+CE), MONAI augmentation, early stopping.

Images are prepared with slicewise's own ``to_network_frame``
so the exported checkpoint sees the same pixels in the widget as in training. Every epoch
reseeds from (seed, epoch) and ends with an atomic ``last.safetensors``; ``resume`` continues
from it to the same weights an uninterrupted run reaches. Under ``torchrun`` the model is
wrapped in DistributedDataParallel (NCCL on CUDA, gloo on CPU); rank 0 writes the files.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from monai.losses import DiceCELoss
from monai.transforms import (
    Compose,
    RandAffined,
    RandFlipd,
    RandRotate90d,
    RandScaleIntensityd,
    RandShiftIntensityd,
)
from monai.utils import set_determinism
from safetensors import safe_open
from safetensors.torch import save
from torch.utils.data import DataLoader, Dataset, DistributedSampler, TensorDataset
from tqdm.auto import tqdm

import slicewise
from slicewise.core.metrics import dice_from_counts, overlap_counts
from slicewise.core.preprocess import resize_long_side, to_network_frame
from slicewise.errors import SlicewiseError
from slicewise.io.autosave import READABLE, write_atomically
from slicewise.models.adapters.base import resize_logits
from slicewise.models.checkpoint import load_checkpoint, save_checkpoint
from slicewise.models.loaded import resolve_device
from slicewise.models.registry import build_model, get_adapter, make_spec
from slicewise.models.spec import ModelSpec
from slicewise_train.config import TrainConfig
from slicewise_train.data import Sample, class_names, load_training_split

LAST = "last.safetensors"


def rex_factor(step: int, total: int) -> float:
    """REX (Chen et al., 2021): lr × (1 − z) / (0.5 + 0.5 (1 − z)) with z = step / total."""
    remaining = max(0.0, 1.0 - step / max(1, total))
    return remaining / (0.5 + 0.5 * remaining)


def augmentation_pipeline(name: str) -> Compose | None:
    """MONAI transforms on (C, H, W) image and (1, H, W) label: "none", "flips" or "standard"."""
    if name == "none":
        return None
    keys = ("image", "label")
    flips = [
        RandFlipd(keys=keys, prob=0.5, spatial_axis=0),
        RandFlipd(keys=keys, prob=0.5, spatial_axis=1),
        RandRotate90d(keys=keys, prob=0.5),
    ]
    if name == "flips":
        return Compose(flips)
    return Compose(
        [
            *flips,
            RandAffined(
                keys=keys,
                prob=0.3,
                rotate_range=0.2,
                scale_range=0.1,
                mode=("bilinear", "nearest"),
                padding_mode="zeros",
            ),
            RandScaleIntensityd(keys="image", factors=0.1, prob=0.3),
            RandShiftIntensityd(keys="image", offsets=0.05, prob=0.3),
        ]
    )


def canvas_side(samples: list[Sample], size: int | None, divisor: int) -> int:
    """The square side training batches are padded to: the resized long side, rounded up to ``divisor``."""
    side = size if size is not None else max(max(s.mask.shape) for s in samples)
    return math.ceil(side / divisor) * divisor


def _pad_square(array: np.ndarray, side: int) -> np.ndarray:
    height, width = array.shape[-2:]
    pad = [(0, 0)] * (array.ndim - 2) + [(0, side - height), (0, side - width)]
    return np.pad(array, pad)


class SliceDataset(Dataset):
    """Prepared (C, S, S) images and (1, S, S) masks, augmented on the fly."""

    def __init__(self, samples: list[Sample], spec: ModelSpec, side: int, augmentation: str = "none") -> None:
        self.items = []
        for sample in samples:
            image = to_network_frame(sample.image, spec.input)
            label = resize_long_side(sample.mask[np.newaxis], spec.input.size, labels=True).astype(np.float32)
            self.items.append({"image": _pad_square(image, side), "label": _pad_square(label, side)})
        self.transform = augmentation_pipeline(augmentation)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        item = self.items[index]
        if self.transform is not None:
            item = self.transform(dict(item))
        image = torch.as_tensor(np.asarray(item["image"]), dtype=torch.float32)
        label = torch.as_tensor(np.asarray(item["label"]), dtype=torch.long)
        return image, label


@dataclass
class Setup:
    """What one run trains: the network, the part with gradients, and how a batch is forwarded."""

    spec: ModelSpec
    model: torch.nn.Module
    trainable: torch.nn.Module
    forward: Callable[[torch.nn.Module, torch.Tensor, tuple[int, int]], torch.Tensor]
    train_set: Dataset
    val_set: Dataset
    synthesis: Any = None  # a generative.Synthesizer with augmentation "generative" (set by ``fit``)


@dataclass(frozen=True)
class Distributed:
    """This process's place under torchrun (one process when not launched by it)."""

    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def is_main_process() -> bool:
    """True unless this is a torchrun worker of rank > 0."""
    return os.environ.get("RANK", "0") == "0"


def init_distributed(device: torch.device) -> Distributed:
    """Join the torchrun process group (NCCL on CUDA, gloo on CPU) when WORLD_SIZE > 1."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Distributed()
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return Distributed(rank=dist.get_rank(), world=dist.get_world_size())


def _features(encoder: torch.nn.Module, dataset: SliceDataset, device: torch.device, label: str) -> TensorDataset:
    """A frozen encoder's features of every (unaugmented) image, computed once, kept as float16."""
    features, labels = [], []
    loader = DataLoader(dataset, batch_size=8)
    with torch.inference_mode():
        for images, masks in tqdm(loader, desc=f"encoder features ({label})", leave=False, disable=None):
            features.append(encoder(images.to(device)).to("cpu", torch.float16))
            labels.append(masks)
    return TensorDataset(torch.cat(features), torch.cat(labels))


def prepare_run(config: TrainConfig, device: torch.device) -> Setup:
    """The spec, network and datasets of a run; a frozen encoder's features are computed here, once."""
    train, val = load_training_split(config)
    channels = 1 if train[0].image.ndim == 2 else train[0].image.shape[2]
    num_classes = int(max(s.mask.max() for s in train)) + 1
    spec = make_spec(
        config.arch,
        class_names=class_names(config.data[0], num_classes),
        in_channels=channels,
        normalization=config.normalization,
        size=config.size,
        name=config.name or config.arch,
        **config.init_kwargs,
    )
    adapter = get_adapter(spec.arch)
    model = build_model(spec, pretrained=config.pretrained).to(device)
    side = canvas_side(train + val, spec.input.size, spec.input.divisor)
    # the attribute of slicewise's encoder-head models; smp models have a freeze_encoder() method instead
    if getattr(model, "freeze_encoder", False) is True:
        if config.augmentation == "generative":
            raise SlicewiseError(
                f"Generative augmentation needs a model trained on images; {config.arch} trains a head on "
                "frozen encoder features; use augmentation 'none' for it."
            )
        encoder = model.encoder.eval()
        return Setup(
            spec=spec,
            model=model,
            trainable=model.head,
            forward=lambda head, features, size: resize_logits(head(features.float()), size),
            train_set=_features(encoder, SliceDataset(train, spec, side), device, "train"),
            val_set=_features(encoder, SliceDataset(val, spec, side), device, "val"),
        )
    return Setup(
        spec=spec,
        model=model,
        trainable=model,
        forward=lambda net, images, size: adapter.logits(net, images),
        # generative: the real pairs get the standard augmentation, the synthetic ones come on top
        train_set=SliceDataset(
            train, spec, side, "standard" if config.augmentation == "generative" else config.augmentation
        ),
        val_set=SliceDataset(val, spec, side),
    )


def validation_dice(
    setup: Setup, network: torch.nn.Module, loader: DataLoader, device: torch.device, autocast: Any
) -> float:
    """Foreground Dice pooled over every pixel of the validation set (background excluded)."""
    intersection = total = 0
    network.eval()
    with torch.inference_mode(), autocast:
        for inputs, labels in loader:
            logits = setup.forward(network, inputs.to(device), tuple(labels.shape[-2:]))
            predicted = logits.argmax(1).cpu().numpy()
            i, t = overlap_counts(predicted, labels[:, 0].numpy(), setup.spec.output.num_classes)
            intersection, total = intersection + i, total + t
    return dice_from_counts(intersection, total)


def _loss_function(name: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    if name == "dice_ce":
        return DiceCELoss(to_onehot_y=True, softmax=True)
    cross_entropy = torch.nn.CrossEntropyLoss()
    return lambda logits, labels: cross_entropy(logits.float(), labels[:, 0])


def _reseed(config: TrainConfig, epoch: int, rank: int, dataset: Dataset) -> torch.Generator:
    """Seed every random source for ``epoch`` so a resumed run repeats it exactly."""
    seed = config.seed + 1000 * epoch + rank
    set_determinism(seed=seed)
    transform = getattr(dataset, "transform", None)
    if transform is not None:
        transform.set_random_state(seed=seed)
    return torch.Generator().manual_seed(seed)


def _save_last(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    """Weights, optimizer moments and loop state in one safetensors file, replaced atomically."""
    tensors = {f"model.{k}": v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    optimizer_state = optimizer.state_dict()
    for index, values in optimizer_state["state"].items():
        for key, value in values.items():
            tensors[f"optimizer.{index}.{key}"] = torch.as_tensor(value).detach().cpu().contiguous().clone()
    state = {**state, "param_groups": optimizer_state["param_groups"]}
    metadata = {"loop_state": json.dumps(state)}
    write_atomically(path, lambda file: file.write(save(tensors, metadata=metadata)), mode=READABLE)


def run_finished(out: Path) -> bool:
    """Whether ``out`` holds a run that trained to its end (all epochs, or stopped early)."""
    last = Path(out) / LAST
    if not last.exists() or not (Path(out) / "history.json").exists():
        return False
    with safe_open(last, framework="pt") as f:
        return bool(json.loads(f.metadata()["loop_state"]).get("done"))


def _load_last(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    with safe_open(path, framework="pt") as f:
        state = json.loads(f.metadata()["loop_state"])
        tensors = {key: f.get_tensor(key) for key in f.keys()}  # noqa: SIM118 (safe_open has no __iter__)
    model.load_state_dict({k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")})
    moments: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        if key.startswith("optimizer."):
            _, index, name = key.split(".", 2)
            moments.setdefault(int(index), {})[name] = value
    optimizer.load_state_dict({"state": moments, "param_groups": state.pop("param_groups")})
    return state


def train_once(
    config: TrainConfig,
    setup: Setup,
    learning_rate: float,
    epochs: int,
    out: Path | None,
    device: torch.device,
    ranks: Distributed,
    *,
    resume: bool = False,
) -> dict[str, Any]:
    """Train ``setup.trainable`` for up to ``epochs``; with ``out``, keep the best and the last weights.

    Returns the loop state: history, best validation Dice and its epoch, whether it stopped early.
    """
    trainable = setup.trainable
    network: torch.nn.Module = trainable
    if ranks.world > 1:
        device_ids = [device.index] if device.type == "cuda" else None
        network = torch.nn.parallel.DistributedDataParallel(trainable, device_ids=device_ids)
    params = [p for p in trainable.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=learning_rate, weight_decay=config.weight_decay)
    batch_size = max(1, config.batch_size // ranks.world)
    steps_per_epoch = math.ceil(len(setup.train_set) / (batch_size * ranks.world))
    total_steps = epochs * steps_per_epoch
    if config.schedule == "rex":
        factor = lambda step: rex_factor(step, total_steps)  # noqa: E731
    else:
        factor = lambda step: 0.5 * (1 + math.cos(math.pi * min(step, total_steps) / total_steps))  # noqa: E731
    use_amp = device.type == "cuda" and config.mixed_precision
    autocast = torch.autocast("cuda", dtype=torch.float16) if use_amp else nullcontext()
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    loss_fn = _loss_function(config.loss)
    val_loader = DataLoader(setup.val_set, batch_size=batch_size)
    state: dict[str, Any] = {
        "epoch": 0,
        "step": 0,
        "best": -1.0,
        "best_epoch": 0,
        "stale": 0,
        "history": [],
        "done": False,
    }
    last = out / LAST if out is not None else None
    if resume and last is not None and last.exists():
        state = _load_last(last, trainable, optimizer)
        scaler.load_state_dict(state.pop("scaler", {}) or scaler.state_dict())
    started = time.time() - (state["history"][-1]["seconds"] if state["history"] else 0.0)
    synthesis = setup.synthesis
    if synthesis is not None:
        synthesis.start()
    for epoch in range(state["epoch"], epochs):
        if state["done"]:
            break
        generator = _reseed(config, epoch, ranks.rank, setup.train_set)
        if ranks.world > 1:
            sampler = DistributedSampler(setup.train_set, num_replicas=ranks.world, rank=ranks.rank, seed=config.seed)
            sampler.set_epoch(epoch)
            loader = DataLoader(setup.train_set, batch_size=batch_size, sampler=sampler)
        else:
            loader = DataLoader(setup.train_set, batch_size=batch_size, shuffle=True, generator=generator)
        network.train()
        losses = []
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{epochs}", leave=False, disable=None if ranks.main else True)
        for inputs, labels in bar:
            for group in optimizer.param_groups:
                group["lr"] = learning_rate * factor(state["step"])
            optimizer.zero_grad(set_to_none=True)
            with autocast:
                logits = setup.forward(network, inputs.to(device), tuple(labels.shape[-2:]))
            loss = loss_fn(logits.float(), labels.to(device))
            if synthesis is not None:
                loss = loss + synthesis.segmenter_loss(setup, network, labels, loss_fn, autocast)
            scaler.scale(loss).backward()
            if synthesis is not None:
                scaler.unscale_(optimizer)  # the unrolled step needs the true gradient (no-op without AMP)
                synthesis.after_backward(
                    setup, trainable, inputs, labels, loss_fn, learning_rate * factor(state["step"]), state["step"]
                )
            scaler.step(optimizer)
            scaler.update()
            state["step"] += 1
            losses.append(loss.item())
            bar.set_postfix(loss=f"{losses[-1]:.4f}")
        dice = validation_dice(setup, trainable, val_loader, device, autocast)
        state["history"].append(
            {
                "epoch": epoch + 1,
                "loss": float(np.mean(losses)),
                "val_dice": dice,
                "lr": learning_rate * factor(state["step"]),
                "seconds": time.time() - started,
            }
        )
        if ranks.main:
            tqdm.write(f"epoch {epoch + 1}/{epochs} loss {np.mean(losses):.4f} val dice {dice:.4f}")
        if dice > state["best"] + config.min_delta or state["best"] < 0:
            state.update(best=dice, best_epoch=epoch + 1, stale=0)
            if out is not None and ranks.main:
                _save_best(out, config, setup, learning_rate, state)
        else:
            state["stale"] += 1
        state["epoch"] = epoch + 1
        state["done"] = state["epoch"] == epochs or bool(config.patience and state["stale"] >= config.patience)
        if last is not None and ranks.main:
            _save_last(last, trainable, optimizer, {**state, "scaler": scaler.state_dict()})
    if ranks.world > 1:
        state["ranks_in_sync"] = _ranks_agree(trainable)
    return state


def _ranks_agree(module: torch.nn.Module) -> bool:
    """Whether every rank holds exactly rank 0's parameters (what DDP's all-reduce guarantees)."""
    mine = torch.cat([p.detach().flatten() for p in module.parameters()])
    reference = mine.clone()
    dist.broadcast(reference, src=0)
    agree = torch.tensor([float(torch.equal(mine, reference))], device=mine.device)
    dist.all_reduce(agree, op=dist.ReduceOp.MIN)
    return bool(agree.item())


def _save_best(out: Path, config: TrainConfig, setup: Setup, learning_rate: float, state: dict[str, Any]) -> None:
    provenance = {
        "trained_by": "slicewise_train.loop.fit",
        "slicewise_version": slicewise.__version__,
        "data": [Path(root).name for root in config.data],
        "config": json.loads(config.to_json()),
        "learning_rate": learning_rate,
        "best_epoch": state["best_epoch"],
        "metrics": {"val_dice": round(state["best"], 4)},
        # until ``fit`` reaches its end this file is a snapshot of an unfinished run; inspect and load_model say so
        "finished": False,
        "epochs_planned": config.epochs,
    }
    save_checkpoint(out / "model.safetensors", setup.model.state_dict(), setup.spec, provenance)


def mark_finished(checkpoint: Path, epochs_run: int) -> None:
    """Rewrite a run's best checkpoint (atomically) with ``finished: true`` now that the run has ended."""
    header, tensors = load_checkpoint(checkpoint)
    provenance = {**header.provenance, "finished": True, "epochs_run": epochs_run}
    save_checkpoint(checkpoint, tensors, header.spec, provenance)


def write_text(path: Path, text: str) -> None:
    """A text file written atomically: a killed run leaves the old file or none, never half of one."""
    write_atomically(path, lambda file: file.write(text.encode()), mode=READABLE)


def estimate_seconds(config: TrainConfig, setup: Setup, device: torch.device, epochs: int) -> float:
    """Seconds ``epochs`` epochs will take, from one timed forward pass of one batch (×3 for the backward
    pass and the optimiser step) plus the validation passes; a rough figure, stated before a long run."""
    batch = min(config.batch_size, len(setup.train_set))
    inputs = torch.stack([setup.train_set[i][0] for i in range(batch)]).to(device)
    setup.trainable.eval()
    with torch.inference_mode():
        started = time.perf_counter()
        setup.forward(setup.trainable, inputs, tuple(inputs.shape[-2:]))
        per_batch = time.perf_counter() - started
    setup.trainable.train()
    steps = math.ceil(len(setup.train_set) / batch)
    validation = math.ceil(len(setup.val_set) / batch)
    return epochs * (3 * steps + validation) * per_batch


def announce(config: TrainConfig, setup: Setup, device: torch.device) -> None:
    """Say up front how many epochs the whole run trains (grid included) and about how long it takes."""
    grid = config.grid_epochs * len(config.lr_grid) if len(config.lr_grid) > 1 else 0
    total = grid + config.epochs
    try:
        seconds = estimate_seconds(config, setup, device, total)
    except (RuntimeError, TypeError, IndexError, ValueError):  # a setup whose batches cannot be timed this way
        tqdm.write(f"training up to {total} epochs over {len(setup.train_set)} images on {device.type}")
        return
    parts = f"{len(config.lr_grid)} learning rates × {config.grid_epochs} + {config.epochs}" if grid else str(total)
    message = (
        f"training up to {total} epochs ({parts}) over {len(setup.train_set)} images on {device.type}: "
        f"about {_duration(seconds)}"
    )
    if seconds > 600:
        message += " — pass --epochs N to bound the whole run, or --lr to skip the learning-rate grid"
    tqdm.write(message)


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def choose_learning_rate(
    config: TrainConfig, setup: Setup, out: Path, device: torch.device, ranks: Distributed
) -> tuple[float, list[dict[str, float]]]:
    """The study's grid search: each rate trains ``grid_epochs`` from the same start; best val Dice wins.

    The trials are recorded in ``out/lr_grid.json`` and reused by a resumed run.
    """
    if len(config.lr_grid) < 2:
        return (config.lr_grid[0] if config.lr_grid else config.learning_rate), []
    record = out / "lr_grid.json"
    if record.exists():
        trials = json.loads(record.read_text())
    else:
        start = {k: v.clone() for k, v in setup.trainable.state_dict().items()}
        trials = []
        for learning_rate in config.lr_grid:
            setup.trainable.load_state_dict(start)
            if ranks.main:
                tqdm.write(f"learning-rate trial {learning_rate:g} ({config.grid_epochs} epochs)")
            result = train_once(config, setup, learning_rate, config.grid_epochs, None, device, ranks)
            trials.append(
                {"learning_rate": learning_rate, "val_dice": result["best"], "best_epoch": result["best_epoch"]}
            )
        setup.trainable.load_state_dict(start)
        if ranks.main:
            write_text(record, json.dumps(trials, indent=1))
    best = max(trials, key=lambda t: t["val_dice"])
    return best["learning_rate"], trials


def fit(config: TrainConfig, out: str | Path, *, resume: bool = False) -> Path:
    """Train one run and write ``out/model.safetensors`` (best validation Dice) and ``out/history.json``.

    resume: continue from ``out/last.safetensors`` if an earlier run was interrupted; a
    finished run returns at once.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if not resume and (out / LAST).exists():
        raise SlicewiseError(f"{out} already holds a run; pass --resume to continue it or choose another --out.")
    if resume and run_finished(out):
        return out / "model.safetensors"
    device = resolve_device(config.device)
    if device.type == "cuda" and "LOCAL_RANK" in os.environ:
        device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
        torch.cuda.set_device(device)
    ranks = init_distributed(device)
    set_determinism(seed=config.seed)
    setup = prepare_run(config, device)
    if config.augmentation == "generative":
        from slicewise_train.generative import prepare_synthesis

        setup.synthesis = prepare_synthesis(config, setup, out, device, world=ranks.world)
    if ranks.main:
        announce(config, setup, device)
    learning_rate, trials = choose_learning_rate(config, setup, out, device, ranks)
    state = train_once(config, setup, learning_rate, config.epochs, out, device, ranks, resume=resume)
    if ranks.main:
        summary = {
            "learning_rate": learning_rate,
            "lr_grid": trials,
            "best_epoch": state["best_epoch"],
            "val_dice": state["best"],
            "epochs_run": state["epoch"],
            "stopped_early": state["epoch"] < config.epochs,
            "world_size": ranks.world,
            "ranks_in_sync": state.get("ranks_in_sync"),
            "device": device.type,
            "mixed_precision": device.type == "cuda" and config.mixed_precision,
            "seed": config.seed,
            "history": state["history"],
        }
        if setup.synthesis is not None:
            summary["generative"] = setup.synthesis.finish(out)
        write_text(out / "history.json", json.dumps(summary, indent=1))
        write_text(out / "config.json", config.to_json())
        if (out / "model.safetensors").exists():
            mark_finished(out / "model.safetensors", state["epoch"])
    return out / "model.safetensors"
