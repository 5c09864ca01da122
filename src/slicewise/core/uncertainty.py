"""Per-pixel uncertainty: predictive entropy, test-time augmentation, MC dropout, ensembles.

Every method reduces to a stack of probability samples (S, K, H, W) — one per augmentation,
dropout draw or ensemble member, computed in one batched forward where possible — and maps
it to an (H, W) float32 map in [0, 1] (entropies are divided by log K).
"""

from __future__ import annotations

import copy
import math
import threading
import weakref
from collections.abc import Callable

import torch
from torch import nn

from slicewise.errors import SlicewiseError

Forward = Callable[[torch.Tensor], torch.Tensor]  # (N, C, H, W) input → (N, K, H, W) probabilities
_EPS = 1e-8


def normalized_entropy(probabilities: torch.Tensor) -> torch.Tensor:
    """(..., K, H, W) probabilities → (..., H, W) entropy / log K, in [0, 1]."""
    k = probabilities.shape[-3]
    entropy = -(probabilities * torch.log(probabilities.clamp_min(_EPS))).sum(-3)
    return (entropy / math.log(k)).clamp_(0.0, 1.0)


def mutual_information(samples: torch.Tensor) -> torch.Tensor:
    """(S, K, H, W) samples → (H, W) epistemic part: entropy of the mean minus mean entropy."""
    return (normalized_entropy(samples.mean(0)) - normalized_entropy(samples).mean(0)).clamp_(0.0, 1.0)


def _dihedral(x: torch.Tensor, index: int) -> torch.Tensor:
    flipped = torch.flip(x, dims=(-1,)) if index >= 4 else x
    return torch.rot90(flipped, k=index % 4, dims=(-2, -1))


def _undo_dihedral(x: torch.Tensor, index: int) -> torch.Tensor:
    rotated = torch.rot90(x, k=-(index % 4), dims=(-2, -1))
    return torch.flip(rotated, dims=(-1,)) if index >= 4 else rotated


def tta_samples(forward: Forward, batch: torch.Tensor) -> torch.Tensor:
    """The 8 flips and 90° rotations of a (1, C, H, W) batch in one forward → (8, K, H, W).

    Non-square slices are zero-padded to a square first so all eight views share one batch.
    """
    height, width = batch.shape[-2:]
    side = max(height, width)
    square = nn.functional.pad(batch, (0, side - width, 0, side - height))
    views = torch.cat([_dihedral(square, i) for i in range(8)])
    probabilities = forward(views)
    restored = torch.stack([_undo_dihedral(probabilities[i], i) for i in range(8)])
    return restored[..., :height, :width]


def dropout_layers(module: nn.Module) -> list[nn.Module]:
    """The dropout layers with a non-zero rate (what MC dropout samples)."""
    kinds = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout)
    return [m for m in module.modules() if isinstance(m, kinds) and m.p > 0]


# the sampling twin of each shared module, kept while the module lives (see ``dropout_twin``)
_TWINS: weakref.WeakKeyDictionary[nn.Module, nn.Module] = weakref.WeakKeyDictionary()
_TWINS_LOCK = threading.Lock()


def dropout_twin(module: nn.Module) -> nn.Module:
    """A private copy of ``module`` whose dropout layers sample (train mode; all else in eval).

    Made once per module and kept beside it, so MC dropout never switches the shared, cached
    module a concurrent prediction may be running.
    """
    if not dropout_layers(module):
        raise SlicewiseError(
            "This model has no dropout layers, so MC dropout has nothing to sample; "
            "use uncertainty 'tta' or 'entropy' instead."
        )
    with _TWINS_LOCK:
        twin = _TWINS.get(module)
        if twin is None:
            twin = copy.deepcopy(module).eval()
            for layer in dropout_layers(twin):
                layer.train()
            _TWINS[module] = twin
    return twin


def mc_dropout_samples(
    module: nn.Module, forward: Callable[[nn.Module, torch.Tensor], torch.Tensor], batch: torch.Tensor, samples: int = 8
) -> torch.Tensor:
    """``samples`` passes of ``forward(twin, x)`` with dropout on (one batch) → (S, K, H, W).

    ``twin`` is ``dropout_twin(module)``; ``module`` itself is never changed.
    """
    twin = dropout_twin(module)
    return forward(twin, batch.expand(samples, *batch.shape[1:]).contiguous(memory_format=_layout(batch)))


def _layout(batch: torch.Tensor) -> torch.memory_format:
    return torch.channels_last if batch.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format


def slice_score(uncertainty: torch.Tensor) -> float:
    """One number per slice for ranking slices to review: the mean of the uncertainty map."""
    return float(uncertainty.mean())
