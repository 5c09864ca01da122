"""Take the docs' screenshots: the demo viewer with a prediction, as a person sees it.

xvfb-run -a -s "-screen 0 1400x900x24" .venv/bin/python scripts/screenshot.py docs/images/demo.png
... scripts/screenshot.py docs/images/uncertainty.png --slice 5 --show uncertainty --rank
... scripts/screenshot.py docs/images/trained_gpvm.png --checkpoint runs/.../model.safetensors
... scripts/screenshot.py docs/images/box_prompt.png --slice 3 --box
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from qtpy.QtWidgets import QApplication

import slicewise
from slicewise._qt.demo import open_demo
from slicewise._qt.layers import META_KEY


def settle(until, seconds: float = 120) -> None:
    """Run the Qt event loop until ``until()`` is true (or the time is up), then a little longer."""
    app = QApplication.instance()
    deadline = time.time() + seconds
    while time.time() < deadline and not until():
        app.processEvents()
        time.sleep(0.02)
    for _ in range(30):
        app.processEvents()
        time.sleep(0.02)


def draw_reference_box(viewer, widget, index: int) -> None:
    """Draw a box around the reference mask of slice ``index`` and wait for LiteMedSAM's proposal."""
    rows, cols = np.nonzero(viewer.layers["reference masks"].data[index])
    widget.predict.follow.value = False
    widget.prompts.boxes_button.native.click()
    settle(lambda: "ready for" in widget.prompts.status.value, seconds=120)
    y0, x0, y1, x1 = rows.min(), cols.min(), rows.max(), cols.max()
    box = np.array([[index, y0, x0], [index, y0, x1], [index, y1, x1], [index, y1, x0]], float)
    widget.prompts.boxes_layer(widget.state.image).add_rectangles(box)
    settle(lambda: "box on" in widget.prompts.status.value, seconds=120)
    for layer in viewer.layers:  # show the box's proposal alone over the image
        owner = layer.metadata.get(META_KEY, {}).get("model")
        if layer.name == "reference masks" or (owner is not None and owner != "lite_medsam"):
            layer.visible = False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out")
    parser.add_argument("--slice", type=int, default=6)
    parser.add_argument("--show", action="append", default=[], help="output role to make visible, e.g. uncertainty")
    parser.add_argument("--rank", action="store_true", help="rank the stack by uncertainty first")
    parser.add_argument("--explain", choices=("gradcam", "saliency", "occlusion"), help="explanation to compute")
    parser.add_argument("--checkpoint", help="a .safetensors file to predict with instead of the default model")
    parser.add_argument("--box", action="store_true", help="draw the reference mask's box for LiteMedSAM instead")
    args = parser.parse_args()
    viewer, widget = open_demo(slicewise.DEFAULT_MODEL)
    viewer.window.resize(1400, 860)
    if args.checkpoint:
        widget.source.checkpoint.value = args.checkpoint
    if args.explain:
        widget.predict.explain.value = args.explain
    if args.rank:
        widget.review.rank_button.native.click()
        settle(lambda: widget.review.queue is not None, seconds=300)
    viewer.dims.set_current_step(0, args.slice)
    if args.box:
        draw_reference_box(viewer, widget, args.slice)
    else:
        settle(
            lambda: (
                not widget.runner.running()
                and any(layer.name.endswith(f"(slice {args.slice})") for layer in viewer.layers)
            )
        )
    for layer in viewer.layers:
        if layer.metadata.get(META_KEY, {}).get("role") in args.show:
            layer.visible = True
            viewer.layers.selection.active = layer
    settle(lambda: True, seconds=1)
    viewer.screenshot(args.out, canvas_only=False)
    viewer.close()


if __name__ == "__main__":
    main()
