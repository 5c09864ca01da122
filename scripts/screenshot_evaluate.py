"""Screenshots of the Evaluate section: the sample stack scored against its reference masks (table,
plot, errors layer), then two models compared (disagreement layer, Wilcoxon p-value).

xvfb-run -a -s "-screen 0 1500x1000x24" .venv/bin/python scripts/screenshot_evaluate.py docs/images

Model B is taught here from ten Kvasir-SEG training images (``slicewise.teach``, EfficientNet-Lite0
features and a light head), saved as a checkpoint and opened in the dock, as a person would.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

import napari
import torch
from screenshot import settle

import slicewise
from slicewise._qt.dock import SlicewiseDock
from slicewise._qt.layers import META_KEY
from slicewise._sample_data import kvasir_test_stack
from slicewise.io.autosave import ENV_DIR
from slicewise.io.images import read_image
from slicewise.io.samples import shared_data_dir


def taught_model(folder: Path, count: int = 10) -> Path:
    """A second polyp model: taught from the first ``count`` Kvasir-SEG training images."""
    root = shared_data_dir() / "kvasir_seg"
    stems = json.loads((root / "split.json").read_text())["train"][:count]
    images = [read_image(root / "images" / f"{stem}.png") for stem in stems]
    masks = [read_image(root / "masks" / f"{stem}.png") for stem in stems]
    model = slicewise.teach(images, masks, encoder="efficientnet_lite0", classes=("background", "polyp"))
    return slicewise.save_model(model, folder / "taught_10.safetensors")


def shoot(viewer: napari.Viewer, path: Path) -> None:
    settle(lambda: True, seconds=1)
    viewer.reset_view()  # the whole slice, at the canvas size the docked panel leaves
    settle(lambda: True, seconds=1)
    viewer.screenshot(str(path), canvas_only=False)
    print("wrote", path, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", help="folder for evaluate.png, evaluate_plot.png and compare.png")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 on a busy machine)")
    parser.add_argument("--second", help="model B as a checkpoint already taught (default: teach it now)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    scratch = Path(tempfile.mkdtemp())
    os.environ[ENV_DIR] = str(scratch / "autosave")  # no other session's unsaved labels in the picture
    second = Path(args.second) if args.second else taught_model(scratch)

    viewer = napari.Viewer(title="slicewise evaluate")
    for data, kwargs, kind in kvasir_test_stack():
        getattr(viewer, f"add_{kind}")(data, **kwargs)
    dock = SlicewiseDock(viewer)
    for name in ("restore", "source", "predict", "review", "prompts", "teach", "edit"):
        getattr(dock, name).visible = False
    dock.native.setMinimumWidth(600)
    dock.native.setMaximumWidth(640)
    viewer.window.add_dock_widget(dock, name="slicewise", area="right")
    viewer.window.resize(1500, 1000)
    dock.state.image = viewer.layers["kvasir_seg test"]
    panel = dock.evaluate

    panel.source_a.value = "polyp_unet"
    panel.evaluate_button.native.click()
    settle(lambda: bool(panel.results) and not dock.runner.running(), seconds=900)
    print(panel.status.value, flush=True)
    worst = min(panel.results[0].per_slice.items(), key=lambda item: item[1]["dice"])[0]
    row = next(r for r in range(panel.table.rowCount()) if panel.table.item(r, 0).text() == str(worst.index[0]))
    panel.table.selectRow(row)
    panel._go_to_row(row)
    shoot(viewer, out / "evaluate.png")
    panel.export_png(str(out / "evaluate_plot.png"))

    dock.state.open_model(str(second))
    panel.source_b.value = str(second)
    panel.evaluate_button.native.click()
    settle(lambda: len(panel.results) == 2 and not dock.runner.running(), seconds=900)
    print(panel.status.value, flush=True)
    for layer in viewer.layers:
        if (layer.metadata.get(META_KEY) or {}).get("role") == "errors":
            layer.visible = False
    panel.table.selectRow(0)
    panel._go_to_row(0)
    shoot(viewer, out / "compare.png")
    viewer.close()


if __name__ == "__main__":
    main()
