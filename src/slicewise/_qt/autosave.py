"""Autosave a person's labels layers in the background and offer to restore them after a crash.

``Autosaver`` follows every Labels layer of the viewer that slicewise did not make (``is_output``).
napari 0.9 tells of a change by ``events.paint`` (once per history step: a brush stroke, a fill, a
polygon, one ``data_setitem``, which is how the edit panel's accepts write), ``events.data`` (new data)
and ``events.set_data`` (every refresh: undo and redo of a shown layer, but also each slice change,
so a ``set_data`` counts only when the layer's undo/redo history moved, read from napari's
``_undo_history``/``_redo_history``); a name change counts too. A change marks the layer dirty and
starts a ``QTimer`` for when ``Throttle`` allows the next save (at once after a quiet spell, then at
most every few seconds).
When it fires, the GUI thread copies the dirty layers' labels and provenance (milliseconds, even for
a 50x512x512 stack) and a napari ``thread_worker`` writes them with ``slicewise.io.autosave``, which
skips a copy equal to the one last written. Closing
the dock widget writes every layer at once and marks the session cleanly closed.

The dock's restore panel (``slicewise._qt.panels.restore``) owns the autosaver and offers the
sessions of an earlier slicewise that did not close cleanly.

Known limits: undo/redo of a *hidden* layer emits no event in napari 0.9, and marking a slice done
in the Teach panel (the layer's metadata, saved with it) changes no pixel, so either is saved with
the layer's next change, at the latest when the widget closes.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from typing import Any

import napari
import numpy as np
from napari.layers import Image, Labels
from napari.qt.threading import FunctionWorker, thread_worker
from napari.utils.notifications import show_error
from qtpy.QtCore import QCoreApplication, QTimer

from slicewise._qt.layers import DONE_KEY, add_quietly, done_slices, is_output, spatial_shape
from slicewise._qt.provenance import track_provenance, tracker_of
from slicewise.io import autosave
from slicewise.io.autosave import DEFAULT_INTERVAL, SavedLabels, Session, Throttle

LAYER_EVENTS = ("paint", "data", "set_data", "name")

Snapshot = tuple[str, SavedLabels, int]  # (layer key, copy of the layer, generation)


def _history_lengths(layer: Labels) -> tuple[int, int] | None:
    """How long napari's undo and redo histories of ``layer`` are (None if this napari has none)."""
    undo, redo = getattr(layer, "_undo_history", None), getattr(layer, "_redo_history", None)
    return None if undo is None or redo is None else (len(undo), len(redo))


@thread_worker
def write_job(session: Session, snapshots: list[Snapshot]) -> str | None:
    """Write the snapshots; a failure comes back as one sentence."""
    try:
        for key, saved, generation in snapshots:
            session.write(key, saved, generation)
    except OSError as error:
        return f"Autosave to {session.root} failed ({error}); free disk space or set $SLICEWISE_AUTOSAVE_DIR."
    return None


class Autosaver:
    """Saves the viewer's person Labels layers in the background, at most every ``interval`` seconds.

    ``source`` gives the image the widget works on; a labels layer of its shape records its name
    (or file path) as the labels' source.
    """

    def __init__(
        self,
        viewer: napari.viewer.Viewer,
        *,
        source: Callable[[], Image | None] = lambda: None,
        interval: float = DEFAULT_INTERVAL,
    ) -> None:
        self._viewer = viewer
        self._source = source
        self.session = Session()
        autosave.prune(self.session.root)
        self._throttle = Throttle(interval)
        self._layers: dict[str, Labels] = {}
        self._dirty: set[str] = set()
        self._history: dict[str, tuple[int, int] | None] = {}  # undo/redo lengths at the last change seen
        self._numbers = itertools.count(1)
        self._generations = itertools.count(1)
        self._worker: FunctionWorker | None = None
        self._failed = False
        self._closed = False
        self._timer = QTimer()
        self._timer.setSingleShot(True)
        self._timer.timeout.connect(self._save_in_background)
        viewer.layers.events.inserted.connect(self._on_inserted)
        viewer.layers.events.removed.connect(self._on_removed)
        QCoreApplication.instance().aboutToQuit.connect(self.close)  # quitting napari closes cleanly too
        for layer in viewer.layers:
            self._watch(layer)

    @property
    def busy(self) -> bool:
        """Whether changes wait for a save or a save is running."""
        return bool(self._dirty) or self._worker is not None

    def _key(self, layer: Any) -> str | None:
        return next((key for key, watched in self._layers.items() if watched is layer), None)

    def _watch(self, layer: Any) -> None:
        if not isinstance(layer, Labels) or is_output(layer) or self._key(layer) is not None:
            return
        self._layers[f"labels-{next(self._numbers)}"] = layer
        for name in LAYER_EVENTS:
            getattr(layer.events, name).connect(self._on_layer_event)

    def _unwatch(self, key: str) -> None:
        layer = self._layers.pop(key)
        for name in LAYER_EVENTS:
            getattr(layer.events, name).disconnect(self._on_layer_event)
        self._dirty.discard(key)

    def _on_inserted(self, event: Any) -> None:
        self._watch(event.value)

    def _on_removed(self, event: Any) -> None:
        key = self._key(event.value)
        if key is not None:
            self._unwatch(key)
            self.session.remove(key)

    def _on_layer_event(self, event: Any) -> None:
        key = self._key(event.source)
        if key is None:
            return
        history = _history_lengths(event.source)
        if event.type == "set_data" and history is not None and history == self._history.get(key):
            return  # a refresh without an undo or redo (a slice change): nothing to save
        self._history[key] = history
        self._dirty.add(key)
        self._schedule()

    def _schedule(self) -> None:
        if self._dirty and self._worker is None and not self._timer.isActive() and not self._closed:
            self._timer.start(int(self._throttle.delay(time.monotonic()) * 1000))

    def _snapshots(self, keys: set[str]) -> list[Snapshot]:
        """Copies of the layers' labels and provenance, taken in the GUI thread."""
        image = self._source()
        snapshots = []
        for key in sorted(keys):
            layer = self._layers[key]
            tracker = tracker_of(layer)
            labels = np.array(layer.data, copy=True)
            source = None
            if image is not None and spatial_shape(image) == labels.shape:
                source = str(image.source.path) if image.source.path else image.name
            saved = SavedLabels(
                name=layer.name,
                labels=labels,
                provenance=None if tracker is None else np.array(tracker.provenance, copy=True),
                scale=tuple(float(s) for s in layer.scale),
                translate=tuple(float(t) for t in layer.translate),
                source=source,
                done=tuple(done_slices(layer)),
                saved_at=time.time(),
            )
            snapshots.append((key, saved, next(self._generations)))
        return snapshots

    def _save_in_background(self) -> None:
        if self._worker is not None or self._closed or not self._dirty:
            return
        snapshots = self._snapshots(self._dirty)
        self._dirty.clear()
        self._throttle.saved(time.monotonic())
        worker = write_job(self.session, snapshots)
        worker.returned.connect(self._on_written)
        worker.finished.connect(self._on_finished)
        self._worker = worker
        worker.start()

    def _on_written(self, failure: str | None) -> None:
        if failure is not None and not self._failed:
            show_error(failure)
        self._failed = failure is not None

    def _on_finished(self) -> None:
        self._worker = None
        self._schedule()

    def save_now(self, layers: list[Labels] | None = None) -> bool:
        """Write ``layers`` (default: every watched layer) in this thread, skipping unchanged ones; False if
        the write failed (one notification)."""
        keys = set(self._layers) if layers is None else {self._key(layer) for layer in layers} - {None}
        self._dirty -= keys
        try:
            for key, saved, generation in self._snapshots(keys):
                self.session.write(key, saved, generation)
        except OSError as error:
            show_error(f"Autosave to {self.session.root} failed ({error}); save your labels layers now.")
            return False
        return True

    def close(self) -> None:
        """Write every watched layer, mark the session cleanly closed and stop following the viewer.

        The widget calls it when it is destroyed (with napari's window) and Qt when the application quits.
        """
        if self._closed:
            return
        self.save_now()
        self._closed = True  # a pending timer finds nothing to do (it may already be deleted with the widget)
        self.session.close()
        QCoreApplication.instance().aboutToQuit.disconnect(self.close)
        self._viewer.layers.events.inserted.disconnect(self._on_inserted)
        self._viewer.layers.events.removed.disconnect(self._on_removed)
        for key in list(self._layers):
            self._unwatch(key)


def restore_layer(viewer: napari.viewer.Viewer, saved: SavedLabels) -> Labels:
    """Add autosaved labels as "<name> (restored)", their provenance (if saved) tracked again.

    The restored labels become the active layer, never their hidden, read-only provenance layer.
    """
    layer = viewer.add_labels(
        saved.labels, name=f"{saved.name} (restored)", scale=saved.scale, translate=saved.translate
    )
    if saved.done:
        layer.metadata[DONE_KEY] = list(saved.done)
    if saved.provenance is not None:
        add_quietly(viewer, track_provenance(layer, saved.provenance).layer)
    return layer
