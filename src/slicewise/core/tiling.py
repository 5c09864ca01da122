"""Large slices: run the network over overlapping tiles and blend them (MONAI's sliding window).

A prepared slice whose side exceeds ``PredictOptions.tile_size`` is cut into square windows of
that side (rounded down to the model's divisor) overlapping by a quarter; each window runs the
same per-window function as an untiled slice (plain, TTA or MC dropout samples), and the
windows' probabilities are blended with Gaussian weights, so seams do not show. Only one
window's activations are alive at a time: memory follows the tile size, not the slice size.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

OVERLAP = 0.25

Samples = Callable[[torch.Tensor], torch.Tensor]  # (1, C, h, w) window → (S, K, h, w) probability samples


def window_shape(height: int, width: int, tile_size: int | None, divisor: int) -> tuple[int, int] | None:
    """The (h, w) window for a prepared (C, height, width) slice, or None when one forward fits.

    height and width are already multiples of ``divisor``, and so is the window.
    """
    if tile_size is None or (height <= tile_size and width <= tile_size):
        return None
    side = max(divisor, tile_size // divisor * divisor)
    return min(side, height), min(side, width)


def sliding_window(samples: Samples, batch: torch.Tensor, window: tuple[int, int], num_classes: int) -> torch.Tensor:
    """Run ``samples`` over the windows of a (1, C, H, W) batch and blend them → (S, K, H, W).

    The S samples of a window travel through MONAI as S·K channels, so the blend weights every
    sample alike and the mean of the blended samples is the blend of the means.
    """
    # imported here: `import monai` loads most of MONAI (and transformers), 10-13 s on a 2-core CPU,
    # which every process predicting with a non-MONAI model (the default) would pay for nothing
    from monai.inferers import sliding_window_inference

    def predictor(windows: torch.Tensor) -> torch.Tensor:
        return samples(windows).flatten(0, 1).unsqueeze(0)

    blended = sliding_window_inference(
        batch,
        roi_size=window,
        sw_batch_size=1,
        predictor=predictor,
        overlap=OVERLAP,
        mode="gaussian",
        sw_device=batch.device,
        device=batch.device,
    )
    return blended[0].unflatten(0, (-1, num_classes))
