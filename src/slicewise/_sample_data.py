"""napari sample data: the shared Kvasir-SEG test split as an RGB stack with reference masks."""

from __future__ import annotations

from typing import Any

from slicewise.io.samples import sample_stack


def kvasir_test_stack() -> list[tuple[Any, dict[str, Any], str]]:
    """The 45 test images (zero-padded to 256²) and their reference masks as layer data."""
    images, masks, _ = sample_stack("kvasir_seg", "test")
    return [
        (images, {"name": "kvasir_seg test", "rgb": True}, "image"),
        # slicewise's own metadata: the ground truth is shown, never offered as "your labels" to accept into
        (
            masks,
            {
                "name": "reference masks",
                "opacity": 0.4,
                "visible": False,
                "metadata": {"slicewise": {"role": "reference"}},
            },
            "labels",
        ),
    ]
