"""The training loop: AdamW, a cosine schedule, Dice+CE, MONAI augmentation, best-on-validation.

Images are prepared with slicewise's own ``match_channels``/``normalize`` so the exported
checkpoint sees the same pixels in the widget as in training.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch
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
from torch.utils.data import DataLoader, Dataset

import slicewise
from slicewise.core.metrics import overlap_counts
from slicewise.core.preprocess import match_channels, normalize
from slicewise.models.adapters.base import Adapter
from slicewise.models.checkpoint import save_checkpoint
from slicewise.models.registry import get_adapter, make_spec
from slicewise.models.spec import ModelSpec
from slicewise_train.config import TrainConfig
from slicewise_train.data import Sample, class_names, load_split


def _pad_square(array: np.ndarray, size: int) -> np.ndarray:
    height, width = array.shape[-2:]
    if height > size or width > size:
        raise ValueError(f"image {width}×{height} is larger than the training size {size}")
    pad = [(0, 0)] * (array.ndim - 2) + [(0, size - height), (0, size - width)]
    return np.pad(array, pad)


def augmentation_pipeline(name: str) -> Compose:
    """MONAI transforms on (C, H, W) image and (1, H, W) label: "flips" or "standard"."""
    keys = ("image", "label")
    flips = [
        RandFlipd(keys=keys, prob=0.5, spatial_axis=0),
        RandFlipd(keys=keys, prob=0.5, spatial_axis=1),
        RandRotate90d(keys=keys, prob=0.5),
    ]
    if name == "flips":
        return Compose(flips)
    if name != "standard":
        raise ValueError(f"augmentation must be 'flips' or 'standard', got {name!r}")
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


class SliceDataset(Dataset):
    """Prepared (C, S, S) images and (1, S, S) masks, augmented on the fly."""

    def __init__(
        self,
        samples: list[Sample],
        spec: ModelSpec,
        size: int,
        augment: bool,
        augmentation: str = "standard",
    ) -> None:
        self.items = [
            {
                "image": _pad_square(normalize(match_channels(s.image, spec.input.channels), spec.input), size),
                "label": _pad_square(s.mask[np.newaxis].astype(np.float32), size),
            }
            for s in samples
        ]
        self.transform = augmentation_pipeline(augmentation) if augment else None

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        item = self.items[index]
        if self.transform is not None:
            item = self.transform(dict(item))
        image = torch.as_tensor(np.asarray(item["image"]), dtype=torch.float32)
        label = torch.as_tensor(np.asarray(item["label"]), dtype=torch.long)
        return image, label


def pooled_dice(model: torch.nn.Module, adapter: Adapter, loader: DataLoader, num_classes: int) -> float:
    """Foreground Dice pooled over every pixel of the loader (background excluded)."""
    intersection = total = 0
    model.eval()
    with torch.inference_mode():
        for images, labels in loader:
            predicted = adapter.logits(model, images).argmax(1).numpy()
            i, t = overlap_counts(predicted, labels[:, 0].numpy(), num_classes)
            intersection, total = intersection + i, total + t
    return 2 * intersection / total if total else 1.0


def fit(config: TrainConfig, out: str | Path) -> Path:
    """Train, keep the weights with the best validation Dice, write ``out/model.safetensors``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    set_determinism(seed=config.seed)
    train = [s for root in config.data for s in load_split(root, "train")]
    val = [s for root in config.data for s in load_split(root, "val")]
    channels = 1 if train[0].image.ndim == 2 else train[0].image.shape[2]
    num_classes = int(max(s.mask.max() for s in train)) + 1
    spec = make_spec(
        config.arch,
        class_names=class_names(config.data[0], num_classes),
        in_channels=channels,
        normalization=config.normalization,
        name=config.name or config.arch,
        **config.init_kwargs,
    )
    adapter = get_adapter(spec.arch)
    model = adapter.build(spec)
    train_loader = DataLoader(
        SliceDataset(train, spec, config.size, augment=True, augmentation=config.augmentation),
        batch_size=config.batch_size,
        shuffle=True,
    )
    val_loader = DataLoader(SliceDataset(val, spec, config.size, augment=False), batch_size=config.batch_size)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.epochs * len(train_loader))
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    best, history, started = -1.0, [], time.time()
    for epoch in range(config.epochs):
        model.train()
        losses = []
        for images, labels in train_loader:
            optimizer.zero_grad()
            loss = loss_fn(adapter.logits(model, images), labels)
            loss.backward()
            optimizer.step()
            schedule.step()
            losses.append(loss.item())
        dice = pooled_dice(model, adapter, val_loader, num_classes)
        history.append(
            {
                "epoch": epoch + 1,
                "loss": float(np.mean(losses)),
                "val_dice": dice,
                "seconds": time.time() - started,
            }
        )
        print(
            f"epoch {epoch + 1}/{config.epochs} loss {np.mean(losses):.4f} val dice {dice:.4f}",
            flush=True,
        )
        if dice > best:
            best = dice
            provenance = {
                "trained_by": "slicewise_train.loop.fit",
                "slicewise_version": slicewise.__version__,
                "data": [Path(root).name for root in config.data],
                "config": json.loads(config.to_json()),
                "best_epoch": epoch + 1,
                "metrics": {"val_dice": round(dice, 4)},
            }
            save_checkpoint(out / "model.safetensors", model.state_dict(), spec, provenance)
    (out / "history.json").write_text(json.dumps(history, indent=1))
    return out / "model.safetensors"
