"""Screenshots of what an annotator sees (issue 13), taken the same way before and after the fixes.

xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python scripts/screenshot_annotator.py docs/images/annotator_after
(with PYTHONPATH pointing at an older checkout's src/, the same script takes the "before" set)

Two pictures: ``<prefix>_demo.png``, the demo window as ``slicewise demo`` opens it (size, active
layer), and ``<prefix>_proposals.png``, two models' proposals on one slice of the HC18 ultrasound
test stack, one with a saliency explanation: their colours, the layer names, the dock's legend.
"""

from __future__ import annotations

import argparse

import torch
from screenshot import settle

from slicewise._qt.demo import open_demo


def set_if(widget, name: str, value) -> None:
    """Set a control the dock may not have (an older slicewise lacks some)."""
    control = getattr(widget, name, None)
    if control is not None:
        control.value = value


def demo(prefix: str) -> None:
    viewer, dock = open_demo("polyp_unet")
    set_if(dock.source, "threads", 1)
    settle(lambda: dock.state.proposal is not None and not dock.runner.running(), seconds=300)
    print("demo window", viewer.window._qt_window.size(), "active:", viewer.layers.selection.active, flush=True)
    viewer.screenshot(f"{prefix}_demo.png", canvas_only=False)
    viewer.close()


def proposals(prefix: str, z: int) -> None:
    """Two models on one grayscale ultrasound slice (HC18): the fetal head model and the polyp model."""
    import napari

    from slicewise._qt.dock import SlicewiseDock
    from slicewise.io.samples import sample_stack

    images, _, _ = sample_stack("hc18", "test")
    viewer = napari.Viewer(title="slicewise: two proposals")
    image = viewer.add_image(images, name="hc18 test")
    dock = SlicewiseDock(viewer)
    try:
        from slicewise._qt.demo import add_scrolling  # the dock scrolls (an older slicewise lacks it)
    except ImportError:
        viewer.window.add_dock_widget(dock, name="slicewise", area="right")
    else:
        add_scrolling(viewer, dock)
    viewer.window._qt_window.resize(1600, 1000)
    set_if(dock.source, "threads", 1)
    dock.state.image = image
    viewer.dims.set_current_step(0, z)
    for model in ("fetal_head_unet", "polyp_unet"):  # two models' proposals on one slice
        dock.state.model = model
        dock.predict.explain.value = "saliency" if model == "fetal_head_unet" else "none"
        dock.predict.predict_button.native.click()
        settle(lambda model=model: not dock.runner.running() and model in dock.predict.status.value, seconds=300)
    for panel in dock:  # the panels this picture is about
        panel.visible = panel.name in ("source", "predict", "edit")
    viewer.reset_view()
    settle(lambda: True, seconds=1)
    print("layers:", [layer.name for layer in viewer.layers], flush=True)
    viewer.screenshot(f"{prefix}_proposals.png", canvas_only=False)
    viewer.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("prefix", help="e.g. docs/images/annotator_after")
    parser.add_argument("--slice", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    demo(args.prefix)
    proposals(args.prefix, args.slice)


if __name__ == "__main__":
    main()
