"""Training configuration: a frozen dataclass that round-trips through JSON.

The defaults are the protocol of Borst & Kounev (2026): input 512, AdamW with the REX
schedule, batch size 8, the learning rate picked per model and dataset from {1e-4, 5e-5, 1e-5}
on the validation split, then the full run with early stopping on validation Dice, and
cross-entropy loss. ``configs/`` holds the CPU-sized variants used for the shipped models.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from slicewise.errors import SlicewiseError

LOSSES = ("ce", "dice_ce")
SCHEDULES = ("rex", "cosine")
AUGMENTATIONS = ("standard", "flips", "none")


@dataclass(frozen=True)
class TrainConfig:
    """One training run.

    size: the long side every image is resized to (then padded to a square); the exported
    checkpoint carries it, so the plugin resizes slices the same way. ``None`` trains at the
    images' own resolution.
    lr_grid: learning rates tried for ``grid_epochs`` each; the best on validation Dice is
    used for the full run. Empty: ``learning_rate`` is used as given.
    loss: "ce" is cross-entropy over the softmax logits; with two classes it equals binary
    cross-entropy on the logit difference, the study's BCE for binary tasks. "dice_ce" adds
    soft Dice (MONAI's DiceCELoss).
    patience: epochs without a validation Dice gain of ``min_delta`` before stopping; 0 never stops.
    pretrained: encoder weights: a local file, or "cache" for the library's local copy.
    folds: 0 trains on the fixed train/val split; k ≥ 2 splits train+val into k folds (seeded)
    and validates on fold ``fold`` (the test split stays held out); ``slicewise-train fit``
    runs every fold.
    """

    data: tuple[str, ...]
    arch: str = "unet"
    init_kwargs: dict[str, Any] = field(default_factory=dict)
    name: str = ""
    pretrained: str | None = None
    epochs: int = 150
    batch_size: int = 8
    learning_rate: float = 1e-4
    lr_grid: tuple[float, ...] = (1e-4, 5e-5, 1e-5)
    grid_epochs: int = 100
    schedule: str = "rex"
    weight_decay: float = 1e-2
    loss: str = "ce"
    patience: int = 20
    min_delta: float = 1e-3
    size: int | None = 512
    seed: int = 42
    normalization: str = "percentile"
    augmentation: str = "standard"
    folds: int = 0
    fold: int = 0
    device: str = "auto"
    mixed_precision: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "data", tuple(str(d) for d in self.data))
        object.__setattr__(self, "lr_grid", tuple(float(lr) for lr in self.lr_grid))
        for name, value, allowed in (
            ("loss", self.loss, LOSSES),
            ("schedule", self.schedule, SCHEDULES),
            ("augmentation", self.augmentation, AUGMENTATIONS),
        ):
            if value not in allowed:
                raise SlicewiseError(f"The config's {name} is {value!r}; choose one of: {', '.join(allowed)}.")
        if self.epochs < 1 or self.batch_size < 1 or self.grid_epochs < 1:
            raise SlicewiseError("The config's epochs, grid_epochs and batch_size must be at least 1.")
        if self.folds == 1 or self.folds < 0:
            raise SlicewiseError(f"The config's folds is {self.folds}; use 0 (fixed splits) or k ≥ 2.")
        if self.folds and not 0 <= self.fold < self.folds:
            raise SlicewiseError(
                f"The config's fold is {self.fold}; with {self.folds} folds use 0 to {self.folds - 1}."
            )

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """A config from JSON values; unknown keys are one clear error, not a TypeError."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise SlicewiseError(
                f"Unknown config key{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}; "
                f"valid keys are: {', '.join(sorted(known))}."
            )
        return cls(**{**values, "data": tuple(values.get("data", ()))})

    @classmethod
    def from_file(cls, path: str | Path) -> TrainConfig:
        return cls.from_dict(read_json(path))


def read_json(path: str | Path) -> dict[str, Any]:
    """A JSON object from a file, or one sentence saying what is wrong with it."""
    path = Path(path)
    try:
        values = json.loads(path.read_text())
    except FileNotFoundError:
        raise SlicewiseError(f"The config file {path} does not exist.") from None
    except json.JSONDecodeError as error:
        raise SlicewiseError(f"{path} is not valid JSON ({error.msg} at line {error.lineno}).") from None
    if not isinstance(values, dict):
        raise SlicewiseError(f"{path} must hold one JSON object of settings.")
    return values
