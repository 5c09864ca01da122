"""Training configuration: a frozen dataclass that round-trips through JSON.

The defaults are the protocol of Borst & Kounev (2026): input 512, AdamW with the REX
schedule, batch size 8, the learning rate picked per model and dataset from {1e-4, 5e-5, 1e-5}
on the validation split, then the full run with early stopping on validation Dice, and
cross-entropy loss. ``configs/`` holds the CPU-sized variants used for the shipped models.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from slicewise.errors import SlicewiseError

LOSSES = ("ce", "dice_ce")
SCHEDULES = ("rex", "cosine")
AUGMENTATIONS = ("standard", "flips", "none", "generative")
# pix2pix U-Net generator sizes: the channels of each level (MONAI UNet, one stride-2 step per level)
GENERATORS = {
    "tiny": (8, 16, 32, 64),
    "small": (16, 32, 64, 128, 256),
    "base": (32, 64, 128, 256, 512),
    "large": (64, 128, 256, 512, 512, 512),
}


@dataclass(frozen=True)
class GenerativeConfig:
    """GenSeg-style generative augmentation (``augmentation: "generative"``; see docs/genseg.md).

    generator: the pix2pix U-Net generator's size, one of ``GENERATORS``.
    pretrain_epochs: epochs of pix2pix training (LSGAN + L1) on the run's own labelled pairs.
    weight: λ, the weight of the loss on synthetic pairs beside the loss on real ones.
    end_to_end: after pre-training, keep updating the generator with the segmenter's validation
    loss through a one-step unrolled hypergradient (GenSeg's end-to-end form); False freezes it.
    l1_weight: pix2pix's L1 weight beside the adversarial loss.
    generator_lr: Adam rate of generator and discriminator (pre-training and end to end).
    hyper_lr: Adam rate of the hypergradient step of the end-to-end form.
    unroll_every: in the end-to-end form, one generator update every this many segmenter steps.
    """

    generator: str = "small"
    pretrain_epochs: int = 100
    weight: float = 1.0
    end_to_end: bool = False
    l1_weight: float = 100.0
    generator_lr: float = 2e-4
    hyper_lr: float = 1e-4
    unroll_every: int = 1

    def __post_init__(self) -> None:
        if self.generator not in GENERATORS:
            raise SlicewiseError(
                f"The config's generative generator is {self.generator!r}; choose one of: {', '.join(GENERATORS)}."
            )
        if not self.weight >= 0:
            raise SlicewiseError(f"The config's generative weight (λ) is {self.weight}; use 0 or more.")
        if self.pretrain_epochs < 1 or self.unroll_every < 1:
            raise SlicewiseError("The config's generative pretrain_epochs and unroll_every must be at least 1.")
        if not (self.l1_weight >= 0 and self.generator_lr > 0 and self.hyper_lr > 0):
            raise SlicewiseError(
                "The config's generative l1_weight must be 0 or more and generator_lr and hyper_lr above 0."
            )

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> GenerativeConfig:
        """Settings from JSON values; an unknown setting is one sentence listing the valid ones."""
        if not isinstance(values, dict):
            raise SlicewiseError('The config\'s generative must be an object of settings, such as {"weight": 1.0}.')
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise SlicewiseError(
                f"Unknown generative setting{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}; "
                f"valid settings are: {', '.join(sorted(known))}."
            )
        check_types(cls, values, "generative setting")
        return cls(**values)


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
    augmentation: "standard" (MONAI flips, rotations, affine, intensity), "flips", "none", or
    "generative": standard, plus synthetic pairs from a mask-to-image generator (``generative``).
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
    generative: GenerativeConfig = field(default_factory=GenerativeConfig)

    def __post_init__(self) -> None:
        object.__setattr__(self, "data", tuple(str(d) for d in self.data))
        if not isinstance(self.generative, GenerativeConfig):
            object.__setattr__(self, "generative", GenerativeConfig.from_dict(self.generative))
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
        check_types(cls, values, "config")
        data = values.get("data", ())
        return cls(**{**values, "data": (data,) if isinstance(data, str) else tuple(data)})

    @classmethod
    def from_file(cls, path: str | Path) -> TrainConfig:
        return cls.from_dict(read_json(path))


def bound_epochs(config: TrainConfig, total: int) -> TrainConfig:
    """``config`` trimmed so the whole run — learning-rate grid included — trains at most ``total`` epochs.

    The grid keeps its rates and gets at most half the budget (``grid_epochs`` shrinks to fit); when
    half the budget cannot give each rate one epoch the grid is skipped and the first rate is used.
    """
    rates = len(config.lr_grid) if len(config.lr_grid) > 1 else 0
    grid_epochs = min(config.grid_epochs, total // 2 // rates) if rates else 0
    if rates and grid_epochs == 0:
        return replace(config, epochs=total, learning_rate=config.lr_grid[0], lr_grid=())
    return replace(config, epochs=total - rates * grid_epochs, grid_epochs=max(1, grid_epochs))


_KINDS = {"int": "a whole number", "float": "a number", "str": "a string", "bool": "true or false"}


def _fits(annotation: str, value: Any) -> bool:
    """Whether a JSON value fits a field annotation such as ``int``, ``str | None`` or ``tuple[float, ...]``."""
    number = isinstance(value, int | float) and not isinstance(value, bool)
    for option in (part.strip() for part in annotation.split("|")):
        if (
            (option == "None" and value is None)
            or (option == "int" and number and float(value).is_integer())
            or (option == "float" and number)
            or (option == "str" and isinstance(value, str))
            or (option == "bool" and isinstance(value, bool))
            or (option.startswith("dict") and isinstance(value, dict))
            or (
                option.startswith("tuple[float")
                and isinstance(value, list | tuple)
                and all(_fits("float", v) for v in value)
            )
            or (option.startswith("tuple[str") and isinstance(value, str | list | tuple))
            or (option not in _KINDS and option[0].isupper() and isinstance(value, dict))  # a nested settings object
        ):
            return True
    return False


def _describe(option: str) -> str:
    if option.startswith("tuple[float"):
        return "a list of numbers"
    if option.startswith("tuple[str"):
        return "a list of strings"
    if option == "None":
        return "null"
    return _KINDS.get(option, "an object")


def check_types(cls: type, values: dict[str, Any], what: str) -> None:
    """Refuse a JSON value of the wrong type for a dataclass field in one sentence (``"epochs": "ten"``)."""
    for f in fields(cls):
        if f.name in values and isinstance(f.type, str) and not _fits(f.type, values[f.name]):
            wanted = " or ".join(_describe(part.strip()) for part in f.type.split("|"))
            shown = json.dumps(values[f.name], default=str)
            shown = shown if len(shown) <= 40 else shown[:39] + "…"
            raise SlicewiseError(f"The {what} {f.name!r} is {shown}; it must be {wanted}.")


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
