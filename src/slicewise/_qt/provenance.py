"""Per-pixel provenance of a person's labels layer, kept in step with napari's paint, undo and redo.

Provenance (who set each pixel: ``UNLABELLED``, ``PERSON``, ``MODEL`` or ``ERASED``, see ``core.proposals``)
lives in a hidden, read-only Labels layer "<labels> provenance" (person blue, model orange, erased grey) beside
the person's
layer: toggle it visible to see it, save it like any layer to export it; the panel's status line counts
it. It is made at the first act into a layer (labels painted before then count as the person's) and is
followed by one tracker per layer, which goes on while the dock widget is closed and stops when the layer
is removed. napari 0.9 tells how to follow it, as found in ``napari/layers/labels/labels.py``:

* ``layer.events.paint`` fires once per history step (a whole brush stroke, a fill, a polygon, one
  ``data_setitem`` or ``block_history`` group) with the step's history atoms; for a step outside a
  stroke or ``block_history`` it fires *before* the data is written, so the new labels are read from
  the atoms, not the layer. ``labels_update`` fires on every partial redraw (each brush dab too) and
  carries colours, not labels, so it is not used. The step's pixels become the person's (erased ones
  ``ERASED``: the eraser's pixels stay empty when a proposal is accepted or merged), or the model's while
  this panel writes.
* ``undo()``/``redo()`` emit no event of their own (only ``set_data`` from ``refresh()``, and nothing at
  all while the layer is hidden), so the tracker wraps the layer's ``undo``/``redo`` (instance attributes,
  removed when it stops) and takes the same step in its ``core.proposals.EditHistory`` (the history the
  core's property tests check), after checking that napari put back exactly that step's labels;
  otherwise (steps from before tracking) it reconciles provenance with the labels.

Known limit: napari records only pixels whose label changes, so painting over a model pixel with the
label it already has leaves it the model's.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
from napari.layers import Labels
from napari.utils.colormaps import DirectLabelColormap

from slicewise._qt.layers import META_KEY
from slicewise.core import proposals
from slicewise.core.proposals import ERASED, MODEL, PERSON, UNLABELLED, Edit, EditHistory, person_provenance
from slicewise.errors import ProposalError

HISTORY_STEPS = 100  # as many undo steps as napari's Labels keeps
PROVENANCE_COLOURS = {
    None: "transparent",
    UNLABELLED: "transparent",
    PERSON: "royalblue",
    MODEL: "orange",
    ERASED: "gray",
}
# one tracker per labels layer, by id: an entry lives while the layer holds its tracker (its wrapped undo)
_TRACKERS: weakref.WeakValueDictionary[int, ProvenanceTracker] = weakref.WeakValueDictionary()


def touched_pixels(atoms: Iterable[Any], shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Flat indices (sorted) of the pixels one napari history step changes, their labels before and after it.

    napari 0.9 records ``data_setitem`` as ``(indices, old_values, new_values)`` and paint/fill/polygon as
    ``_MaskedPaintAtom(slice_key, mask, old_values, new_value)`` (``mask=None``: the whole box). A pixel
    touched by several atoms of a step keeps the first old and the last new value.
    """
    indices, olds, news = [], [], []
    for atom in atoms:
        if hasattr(atom, "slice_key"):
            box = tuple(np.arange(s.start, s.stop) for s in atom.slice_key)
            mask = np.ones([b.size for b in box], bool) if atom.mask is None else atom.mask
            coords = tuple(b[c] for b, c in zip(box, np.nonzero(mask), strict=True))
            old, new = atom.old_values, atom.new_value
        else:
            coords, old, new = atom
        old = np.asarray(old).reshape(-1)
        indices.append(np.ravel_multi_index(tuple(np.asarray(c) for c in coords), shape))
        olds.append(old)
        news.append(np.broadcast_to(np.asarray(new, dtype=old.dtype), old.shape))
    index = np.concatenate(indices)
    unique, first = np.unique(index, return_index=True)
    _, last_from_end = np.unique(index[::-1], return_index=True)
    return unique, np.concatenate(olds)[first], np.concatenate(news)[index.size - 1 - last_from_end]


class ProvenanceTracker:
    """Keeps a provenance layer in step with one Labels layer's paint, undo and redo (see the module).

    There is one per labels layer (``tracker_of``), kept alive by the layer's wrapped undo, so provenance
    stays right while the dock widget is closed; ``on_change`` tells the panel that shows it.
    """

    def __init__(self, labels: Labels, provenance: Labels) -> None:
        self.labels, self.layer = labels, provenance
        self.on_change: Callable[[], None] | None = None
        self._model_writes = False
        self.history = EditHistory(maxlen=HISTORY_STEPS)  # one step per napari history step
        self._napari_undo, self._napari_redo = labels.undo, labels.redo
        labels.undo, labels.redo = self.undo, self.redo
        labels.events.paint.connect(self._on_paint)
        labels.events.data.connect(self._on_data)
        _TRACKERS[id(labels)] = self

    @property
    def provenance(self) -> np.ndarray:
        """The per-pixel provenance, of the labels' shape (the provenance layer's data)."""
        return self.layer.data

    def detach(self) -> None:
        """Stop following the labels layer and give it back napari's own undo/redo."""
        _TRACKERS.pop(id(self.labels), None)
        self.labels.events.paint.disconnect(self._on_paint)
        self.labels.events.data.disconnect(self._on_data)
        del self.labels.undo, self.labels.redo

    @contextmanager
    def model_writes(self) -> Iterator[None]:
        """Changes the labels layer records inside this block are the model's."""
        self._model_writes = True
        try:
            yield
        finally:
            self._model_writes = False

    def undo(self) -> None:
        """napari's undo, then the same step taken back in the provenance."""
        self._napari_undo()
        self._follow(undoing=True)

    def redo(self) -> None:
        """napari's redo, then the same step made again in the provenance."""
        self._napari_redo()
        self._follow(undoing=False)

    def _on_paint(self, event: Any) -> None:
        shape = self.provenance.shape
        index, old_labels, new_labels = touched_pixels(event.value, shape)
        who = np.full(index.size, MODEL) if self._model_writes else person_provenance(old_labels, new_labels)
        edit = Edit(shape, index, old_labels, new_labels, np.take(self.provenance, index), who.astype(np.uint8))
        np.put(self.provenance, index, edit.new_provenance)
        self.history.push(edit)
        self._changed()

    def _follow(self, *, undoing: bool) -> None:
        """napari just took a step back (or again): take the same step in the history, if it is that step."""
        step = self.history.next_undo if undoing else self.history.next_redo
        where = None if step is None else np.unravel_index(step.index, step.shape)
        expected = None if step is None else (step.old_labels if undoing else step.new_labels)
        try:
            if step is None or not np.array_equal(self.labels.data[where], expected):
                raise ProposalError("napari's step is not the history's")
            labels = np.array(self.labels.data, copy=True)  # the labels as they were before napari's step
            labels[where] = step.new_labels if undoing else step.old_labels
            _, provenance = (self.history.undo if undoing else self.history.redo)(labels, self.provenance)
            self.provenance[...] = provenance
        except ProposalError:  # a step from before tracking, or provenance changed behind the history
            self.provenance[...] = proposals.reconcile_provenance(self.labels.data, self.provenance)
        self._changed()

    def _on_data(self) -> None:
        """The labels layer got new data: provenance starts afresh from it (its labels are the person's)."""
        self.layer.data = proposals.initial_provenance(self.labels.data)
        self.layer.editable = False
        self.history.clear()
        self._changed()

    def _changed(self) -> None:
        self.layer.refresh()
        if self.on_change is not None:
            self.on_change()


def tracker_of(labels: Labels) -> ProvenanceTracker | None:
    """The provenance tracker following ``labels``, if any."""
    return _TRACKERS.get(id(labels))


def track_provenance(labels: Labels, provenance: np.ndarray | None = None) -> ProvenanceTracker:
    """The tracker following ``labels``, made with a hidden provenance layer if there is none.

    A new provenance layer holds ``provenance`` (restored autosaves bring theirs), else counts every
    labelled pixel as the person's; it is not added to a viewer here.
    """
    tracker = tracker_of(labels)
    if tracker is None:
        layer = Labels(
            proposals.initial_provenance(labels.data) if provenance is None else provenance,
            name=f"{labels.name} provenance",
            colormap=DirectLabelColormap(color_dict=PROVENANCE_COLOURS),
            opacity=0.6,
            visible=False,
            scale=labels.scale,
            translate=labels.translate,
            metadata={META_KEY: {"role": "provenance", "labels": labels.name}},
        )
        layer.editable = False
        tracker = ProvenanceTracker(labels, layer)
    return tracker


def trackers() -> list[ProvenanceTracker]:
    """Every provenance tracker following a layer now."""
    return list(_TRACKERS.values())
