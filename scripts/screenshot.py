"""Take the README's screenshot: the demo viewer with a prediction, as a person sees it.

xvfb-run -a -s "-screen 0 1400x900x24" .venv/bin/python scripts/screenshot.py docs/images/demo.png
"""

from __future__ import annotations

import sys
import time

from qtpy.QtWidgets import QApplication

import slicewise
from slicewise._qt.demo import open_demo


def main(out: str, slice_index: int = 6) -> None:
    viewer, widget = open_demo(slicewise.DEFAULT_MODEL)
    viewer.window.resize(1400, 860)
    app = QApplication.instance()
    viewer.dims.set_current_step(0, slice_index)
    viewer.layers["reference masks"].visible = False
    deadline = time.time() + 60
    while time.time() < deadline:
        app.processEvents()
        time.sleep(0.02)
        done = any(layer.name.endswith(f"(slice {slice_index})") for layer in viewer.layers)
        if done and widget._worker is None:
            break
    for _ in range(30):
        app.processEvents()
        time.sleep(0.02)
    viewer.screenshot(out, canvas_only=False)
    viewer.close()


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "docs/images/demo.png")
