"""The checkpoint metadata schema: what a model is, what it expects and what it returns.

A ``ModelSpec`` is stored as JSON in the header of every slicewise checkpoint, so a file
describes itself (MONAI bundle's ``network_data_format`` idea) and is validated against an
image before inference.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from numbers import Integral
from typing import Any

NORMALIZATIONS = ("percentile", "zscore", "none")
# bounds a spec from an untrusted file must keep (labels are uint8; slices are at most 4096 px a side)
MAX_CHANNELS = 64
MAX_CLASSES = 255
MAX_DIVISOR = 1024
MAX_SIZE = 4096
ACTIVATIONS = ("softmax", "sigmoid")


@dataclass(frozen=True)
class InputSpec:
    """What the network expects.

    channels: 1 (grayscale) or 3 (RGB); a grayscale slice is repeated for an RGB model.
    normalization: "percentile" rescales each slice so its `percentiles` map to [0, 1]
    (dtype-agnostic: uint8, uint16 and float data give the same result); "zscore" subtracts
    the slice mean and divides by its std; "none" passes values as float32.
    divisor: height and width are padded up to a multiple of it.
    size: the long side the network was trained at; when set, each slice is resized (aspect
    kept) so its longer side is ``size`` before the network, and every output is resized back
    to the slice. ``None`` runs the slice at its own resolution.
    """

    channels: int = 3
    normalization: str = "percentile"
    percentiles: tuple[float, float] = (0.5, 99.5)
    divisor: int = 16
    size: int | None = None

    def __post_init__(self) -> None:
        for name in ("channels", "divisor", "size"):
            value = getattr(self, name)
            if (value is not None or name != "size") and (not isinstance(value, Integral) or isinstance(value, bool)):
                raise TypeError(f"{name} must be an integer, got {value!r:.40}")
        if not 1 <= self.channels <= MAX_CHANNELS:
            raise ValueError(f"channels must be 1 to {MAX_CHANNELS}, got {self.channels}")
        if self.divisor > MAX_DIVISOR:
            raise ValueError(f"divisor must be at most {MAX_DIVISOR}, got {self.divisor}")
        if self.size is not None and self.size > MAX_SIZE:
            raise ValueError(f"size must be at most {MAX_SIZE}, got {self.size}")
        if len(self.percentiles) != 2:
            raise ValueError(f"percentiles must be two numbers, got {self.percentiles!r}")
        low, high = (float(p) for p in self.percentiles)
        if not 0 <= low < high <= 100:  # also false for NaN
            raise ValueError(f"percentiles must be two numbers 0 <= low < high <= 100, got {self.percentiles!r}")
        if self.normalization not in NORMALIZATIONS:
            raise ValueError(f"normalization must be one of {NORMALIZATIONS}, got {self.normalization!r}")
        if self.divisor < 1:
            raise ValueError(f"divisor must be >= 1, got {self.divisor}")
        if self.size is not None and self.size < 8:
            raise ValueError(f"size must be None or >= 8, got {self.size}")
        object.__setattr__(self, "percentiles", tuple(float(p) for p in self.percentiles))


@dataclass(frozen=True)
class OutputSpec:
    """What the network returns: one logit channel per class (softmax), background first."""

    class_names: tuple[str, ...] = ("background", "foreground")
    activation: str = "softmax"

    def __post_init__(self) -> None:
        if isinstance(self.class_names, str) or not all(isinstance(n, str) for n in self.class_names):
            raise TypeError(f"class_names must be a list of strings, got {self.class_names!r}")
        if len(self.class_names) < 2:
            raise ValueError("class_names needs at least background and one class")
        if len(self.class_names) > MAX_CLASSES:
            raise ValueError(f"at most {MAX_CLASSES} classes fit a label map, got {len(self.class_names)}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}, got {self.activation!r}")
        object.__setattr__(self, "class_names", tuple(self.class_names))

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to rebuild a network and run it on a slice.

    arch: a registry name (``slicewise models --architectures``).
    init_kwargs: the keyword arguments the architecture's builder takes (JSON values only).
    """

    arch: str
    init_kwargs: dict[str, Any] = field(default_factory=dict)
    input: InputSpec = field(default_factory=InputSpec)
    output: OutputSpec = field(default_factory=OutputSpec)
    name: str = ""

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelSpec:
        """A spec from JSON values; values of the wrong JSON type are a ``TypeError`` naming the field."""
        if not isinstance(data, dict):
            raise TypeError(f"a model spec is a JSON object, not a {type(data).__name__}")
        for key, kind in (("arch", str), ("name", str), ("init_kwargs", dict), ("input", dict), ("output", dict)):
            if key in data and not isinstance(data[key], kind):
                raise TypeError(f"the spec's {key} must be a JSON {kind.__name__}, got {data[key]!r:.60}")
        return cls(
            arch=data["arch"],
            init_kwargs=dict(data.get("init_kwargs", {})),
            input=InputSpec(**data.get("input", {})),
            output=OutputSpec(**data.get("output", {})),
            name=data.get("name", ""),
        )

    @classmethod
    def from_json(cls, text: str) -> ModelSpec:
        return cls.from_dict(json.loads(text))
