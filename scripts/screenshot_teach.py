"""Screenshot of the Teach panel in use: four slices of a stack labelled, taught, proposed.

xvfb-run -a -s "-screen 0 1400x1000x24" .venv/bin/python scripts/screenshot_teach.py docs/images/teach.png
xvfb-run -a -s "-screen 0 1400x1000x24" .venv/bin/python scripts/screenshot_teach.py docs/images/teach_vessels.png \
    --dataset chase_db1 --split train --slice 6
SLICEWISE_AUTOSAVE_DIR=$(mktemp -d) xvfb-run -a -s "-screen 0 1400x1000x24" .venv/bin/python \
    scripts/screenshot_teach.py docs/images/teach_outlines.png --encoder tinyvit_litemedsam
SLICEWISE_AUTOSAVE_DIR=$(mktemp -d) xvfb-run -a -s "-screen 0 1400x1000x24" .venv/bin/python \
    scripts/screenshot_teach.py docs/images/teach_volume.png --volume mni152_icbm2009a_3d/image.nii.gz \
    mni152_icbm2009a_3d/labels.nii.gz --labelled 27 78 128 --done 170 --slice 100
SLICEWISE_AUTOSAVE_DIR=$(mktemp -d) xvfb-run -a -s "-screen 0 1400x1000x24" .venv/bin/python \
    scripts/screenshot_teach.py docs/images/fill_between.png --volume pyradiomics_3d/brain2_image.nrrd \
    pyradiomics_3d/brain2_label.nrrd --labelled 8 10 --slice 9 --fill
"""

from __future__ import annotations

import argparse

import napari
import numpy as np
import torch
from screenshot import settle

from slicewise._qt.dock import SlicewiseDock
from slicewise.io.medical import read_volume
from slicewise.io.samples import sample_stack, shared_data_dir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out")
    parser.add_argument("--dataset", default="kvasir_seg", help="a dataset of ../shared/data")
    parser.add_argument("--split", default="test")
    parser.add_argument("--encoder", default="efficientnet_lite0")
    parser.add_argument("--slice", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 on a busy machine)")
    parser.add_argument("--volume", nargs=2, metavar=("IMAGE", "LABELS"), help="a volume of ../shared/data instead")
    parser.add_argument("--labelled", nargs="+", type=int, default=[0, 1, 2, 3], help="the slices painted")
    parser.add_argument("--done", nargs="*", type=int, default=[], help="slices marked done with nothing painted")
    parser.add_argument("--fill", action="store_true", help="press Fill between instead of Teach")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    viewer = napari.Viewer(title="slicewise teach")
    if args.volume:
        images, masks = (read_volume(shared_data_dir() / path).array for path in args.volume)
        title = args.volume[0]
    else:
        images, masks, _ = sample_stack(args.dataset, args.split)
        title = f"{args.dataset} {args.split}"
    image = viewer.add_image(images, name=title, rgb=images.ndim == 4)
    mine = viewer.add_labels(np.zeros(masks.shape, np.uint8), name="my labels")
    mine.data[args.labelled] = masks[args.labelled]  # the slices a person painted completely
    dock = SlicewiseDock(viewer)
    for name in ("restore", "predict", "review", "prompts"):
        getattr(dock, name).visible = False
    dock.native.setMaximumWidth(560)  # leave the canvas most of the window
    viewer.window.add_dock_widget(dock, name="slicewise", area="right")
    viewer.window.resize(1400, 980)
    dock.state.image = image
    dock.teach.teach_from.value = mine
    dock.teach.encoder.value = args.encoder
    for index in args.done:
        viewer.dims.set_current_step(0, index)
        dock.teach.done_button.native.click()
    viewer.dims.set_current_step(0, args.slice)
    (dock.teach.fill_button if args.fill else dock.teach.teach_button).native.click()
    settle(lambda: dock.state.proposal is not None and not dock.runner.running(), seconds=900)
    print(dock.teach.status.value, flush=True)
    viewer.layers.selection.active = mine
    settle(lambda: True, seconds=1)
    viewer.screenshot(args.out, canvas_only=False)
    viewer.close()


if __name__ == "__main__":
    main()
