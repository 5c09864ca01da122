"""Autosave in a real viewer: every kind of edit is saved, a clean close is not offered, kill -9 is recovered."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from qtpy.QtCore import QEvent
from qtpy.QtWidgets import QApplication

from slicewise._qt.autosave import Autosaver, restore_layer
from slicewise._qt.dock import SlicewiseDock
from slicewise._qt.layers import DONE_KEY, META_KEY
from slicewise._qt.provenance import tracker_of
from slicewise.core.proposals import MODEL, PERSON
from slicewise.io import autosave
from slicewise.io.autosave import DEFAULT_INTERVAL, ENV_DIR, SESSION_FILE, SavedLabels, Session

TIMEOUT_MS = 20_000
PAINT_SECONDS = 7.0  # the child paints this long (two saves at least) before it is killed

# The child: a real viewer with the slicewise widget; a person's brush strokes, their data_setitem
# writes and the model's accepts (provenance MODEL) every 0.2 s, each step's labels and provenance
# kept beside a log line "step time", until the parent kills it.
CHILD = r"""
import itertools, sys, time
from pathlib import Path
import numpy as np
import napari
from qtpy.QtWidgets import QApplication
from slicewise._qt.provenance import track_provenance
from slicewise._qt.dock import SlicewiseDock

marker = Path(sys.argv[1])
viewer = napari.Viewer(show=False)
widget = SlicewiseDock(viewer)
viewer.window.add_dock_widget(widget)
widget.source.image.value = viewer.add_image(np.zeros((4, 64, 64), np.float32), name="scan", scale=(3, 1, 1))
labels = viewer.add_labels(np.zeros((4, 64, 64), np.uint8), name="mine", scale=(3, 1, 1))
tracker = track_provenance(labels)
viewer.add_layer(tracker.layer)
labels.brush_size = 3
app = QApplication.instance()
with open(marker / "log.txt", "a") as log:
    for step in itertools.count(1):
        z, row, col, value = step % 4, 4 + (step * 7) % 56, 4 + (step * 11) % 56, step % 250 + 1
        if step % 3 == 0:
            labels.paint((z, row, col), value)
        else:
            where = (np.full(4, z), np.array([row, row, row + 1, row + 1]), np.array([col, col + 1, col, col + 1]))
            if step % 3 == 1:
                with tracker.model_writes():
                    labels.data_setitem(where, value)
            else:
                labels.data_setitem(where, value)
        np.save(marker / f"{step}-labels.npy", labels.data)
        np.save(marker / f"{step}-provenance.npy", tracker.provenance)
        log.write(f"{step} {time.time()}\n")
        log.flush()
        until = time.monotonic() + 0.2
        while time.monotonic() < until:
            app.processEvents()
            time.sleep(0.01)
"""


def saved_by(autosaver: Autosaver) -> dict[str, SavedLabels]:
    return {saved.name: saved for saved in autosave.restore(autosaver.session.path)}


def wait_saved(qtbot, autosaver: Autosaver, layer) -> None:
    """Until the layer's autosave holds exactly its labels."""

    def saved() -> bool:
        if autosaver.busy or autosaver.session.path is None:
            return False
        found = saved_by(autosaver).get(layer.name)
        return found is not None and np.array_equal(found.labels, layer.data)

    qtbot.waitUntil(saved, timeout=TIMEOUT_MS)


def test_brush_fill_setitem_undo_and_new_data_are_saved_within_the_interval(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    mine = viewer.add_labels(np.zeros((3, 20, 20), np.uint8), name="mine", scale=(4.0, 1.0, 1.0))
    viewer.add_labels(np.ones((3, 20, 20), np.uint8), name="m labels", metadata={META_KEY: {"role": "labels"}})
    autosaver = Autosaver(viewer, interval=0.3)
    mine.brush_size = 3

    mine.paint((1, 5, 5), 2)  # the brush
    wait_saved(qtbot, autosaver, mine)
    assert set(saved_by(autosaver)) == {"mine"}  # slicewise's own layers are not the person's
    assert saved_by(autosaver)["mine"].scale == (4.0, 1.0, 1.0)
    mine.fill((1, 15, 15), 3)  # the fill bucket
    wait_saved(qtbot, autosaver, mine)
    mine.data_setitem((np.array([2]), np.array([0]), np.array([0])), 7)  # how the edit panel's accepts write
    wait_saved(qtbot, autosaver, mine)
    mine.undo()  # Ctrl+Z on the shown layer
    assert mine.data[2, 0, 0] == 0
    wait_saved(qtbot, autosaver, mine)
    mine.data = np.full((3, 20, 20), 4, np.uint8)  # new data
    wait_saved(qtbot, autosaver, mine)
    mine.name = "renamed"
    qtbot.waitUntil(lambda: not autosaver.busy and "renamed" in saved_by(autosaver), timeout=TIMEOUT_MS)
    viewer.dims.set_current_step(0, 2)  # scrolling refreshes the layer (set_data) but changes no label
    viewer.dims.set_current_step(0, 0)
    assert not autosaver._dirty  # so no copy of the stack is taken

    mine.visible = False
    mine.undo()  # napari emits nothing for a hidden layer's undo: saved at close
    autosaver.close()
    np.testing.assert_array_equal(saved_by(autosaver)["renamed"].labels, mine.data)
    assert json.loads((autosaver.session.path / SESSION_FILE).read_text())["closed"]

    viewer.layers.remove(mine)  # after close nothing follows the viewer any more
    assert "renamed" in saved_by(autosaver)


def test_a_removed_layer_leaves_no_autosave(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    mine = viewer.add_labels(np.zeros((8, 8), np.uint8), name="mine")
    autosaver = Autosaver(viewer, interval=0.1)
    mine.paint((3, 3), 1)
    wait_saved(qtbot, autosaver, mine)
    viewer.layers.remove(mine)
    assert saved_by(autosaver) == {}


def test_a_destroyed_widget_saves_at_once_and_closes_the_session_cleanly(make_napari_viewer, autosave_dir):
    viewer = make_napari_viewer()
    widget = SlicewiseDock(viewer)
    viewer.window.add_dock_widget(widget)
    assert widget.restore.native.isHidden()  # nothing to restore
    mine = viewer.add_labels(np.zeros((8, 8), np.uint8), name="mine")
    mine.paint((3, 3), 1)
    mine.metadata[DONE_KEY] = [0]  # marked done in the teach panel
    session = widget.restore.autosaver.session
    assert session.path is None  # the save waits for the event loop
    viewer.window.remove_dock_widget("all")
    widget.native.deleteLater()  # as when napari deletes its closed window, the dock widget with it
    QApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete)
    assert json.loads((session.path / SESSION_FILE).read_text())["closed"]
    (saved,) = autosave.restore(session.path)
    np.testing.assert_array_equal(saved.labels, mine.data)  # the final save
    assert restore_layer(viewer, saved).metadata[DONE_KEY] == [0]  # the done marks come back with the labels
    assert autosave.recoverable_sessions(autosave_dir) == []


def test_discard_deletes_the_offered_session(make_napari_viewer, autosave_dir, notifications, qtbot):
    orphan = Session(autosave_dir)
    orphan.write("labels-1", SavedLabels("lost", np.ones((8, 8), np.uint8), saved_at=time.time()), 1)
    manifest = json.loads((orphan.path / SESSION_FILE).read_text())
    manifest["process_started"] = 0.0  # this pid now belongs to a later process: the writer is gone
    (orphan.path / SESSION_FILE).write_text(json.dumps(manifest))

    viewer = make_napari_viewer()
    widget = SlicewiseDock(viewer)
    assert not widget.restore.native.isHidden() and "lost" in widget.restore.message.value
    assert any("unsaved labels" in message for message in notifications)
    viewer.window.add_dock_widget(widget)
    viewer.window._qt_window.show()
    button = widget.restore.discard_button.native
    qtbot.waitUntil(lambda: button.isVisible())
    assert button.height() >= button.minimumSizeHint().height()  # in the scrolling dock the offer's buttons are whole
    widget.restore.discard_button.native.click()
    assert not orphan.path.exists() and widget.restore.native.isHidden()
    assert "lost (restored)" not in viewer.layers


def test_kill_9_mid_session_is_restored_with_at_most_a_few_seconds_lost(
    make_napari_viewer, tmp_path, autosave_dir, notifications
):
    marker = tmp_path / "child"
    marker.mkdir()
    log = marker / "log.txt"
    env = {**os.environ, "QT_API": "pyqt6", ENV_DIR: str(autosave_dir)}
    with open(marker / "output.txt", "wb") as output:
        child = subprocess.Popen([sys.executable, "-c", CHILD, str(marker)], env=env, stdout=output, stderr=output)
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and child.poll() is None:
            times = [float(line.split()[1]) for line in log.read_text().splitlines()] if log.exists() else []
            if times and times[-1] - times[0] >= PAINT_SECONDS:
                break
            time.sleep(0.1)
        assert child.poll() is None, (marker / "output.txt").read_text()
        child.send_signal(signal.SIGKILL)
        killed_at = time.time()
    finally:
        if child.poll() is None:
            child.kill()
        child.wait()  # reaped: no zombie keeps its pid alive
    assert child.returncode == -signal.SIGKILL
    steps = {int(step): float(at) for step, at in (line.split() for line in log.read_text().splitlines())}

    viewer = make_napari_viewer()
    widget = SlicewiseDock(viewer)
    viewer.window.add_dock_widget(widget)
    assert not widget.restore.native.isHidden() and "mine" in widget.restore.message.value
    assert any("unsaved labels" in message for message in notifications)
    (offered,) = widget.restore.sessions
    widget.restore.restore_button.native.click()

    restored = viewer.layers["mine (restored)"]
    matches = [step for step in steps if np.array_equal(np.load(marker / f"{step}-labels.npy"), restored.data)]
    assert matches, "the restored labels are none of the states the child painted"
    saved_step = max(matches)
    lost = [at for step, at in steps.items() if step > saved_step]
    assert not lost or killed_at - min(lost) <= DEFAULT_INTERVAL + 2.0, (saved_step, max(steps), killed_at - min(lost))
    assert saved_step >= 10  # several saves happened, not just the first

    provenance = tracker_of(restored).provenance  # provenance is back, followed by the edit panel's tracker
    np.testing.assert_array_equal(provenance, np.load(marker / f"{saved_step}-provenance.npy"))
    assert {PERSON, MODEL} <= set(np.unique(provenance).tolist())
    assert tuple(restored.scale) == (3.0, 1.0, 1.0)
    assert widget.edit.target.value is restored and widget.restore.native.isHidden()

    assert not Path(offered.path).exists()  # the old files are gone, the restored layer is in this session
    np.testing.assert_array_equal(saved_by(widget.restore.autosaver)["mine (restored)"].labels, restored.data)
