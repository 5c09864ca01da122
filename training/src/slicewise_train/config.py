"""Training configuration: a frozen dataclass that round-trips through JSON."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class TrainConfig:
    """One training run. ``size`` is the square side every training image is padded to."""

    data: tuple[str, ...]
    arch: str = "unet"
    init_kwargs: dict[str, Any] = field(default_factory=dict)
    name: str = ""
    epochs: int = 100
    batch_size: int = 8
    learning_rate: float = 1e-3
    weight_decay: float = 1e-4
    size: int = 256
    seed: int = 20240607
    normalization: str = "percentile"
    augmentation: str = "standard"  # "flips": flips and 90° rotations only; "standard": + affine, intensity

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_file(cls, path: str | Path) -> TrainConfig:
        values = json.loads(Path(path).read_text())
        values["data"] = tuple(values["data"])
        return cls(**values)
