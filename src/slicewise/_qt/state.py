"""The dock's one shared state: what the person chose, what is open, what was proposed.

Every panel receives the same ``DockState`` (and the ``JobRunner``); a panel writes the fields its
controls own and follows the others through ``state.events.<field>`` (psygnal, emitted only on a
real change). No panel reaches into another. The state also keeps the dock's ties to the viewer —
key bindings, viewer event connections, things to close — so the dock has one close path.

A key bound with ``bind_key`` works wherever the focus is in the viewer's window (a window-wide
shortcut, so also while a dock control has the focus), is in the viewer's keymap, and is listed as a
"slicewise: …" action in napari's Preferences > Shortcuts (Viewer key bindings).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import napari
import torch
from napari.layers import Image, Labels
from napari.utils.action_manager import action_manager
from napari.utils.notifications import show_error
from psygnal import evented
from qtpy.QtGui import QKeySequence
from qtpy.QtWidgets import QShortcut

from slicewise._qt.jobs import ModelCache, Request
from slicewise._reader import prefer_slicewise_reader
from slicewise.api import DEFAULT_MODEL
from slicewise.core.slices import slice_ref_from_point
from slicewise.core.types import SliceRef
from slicewise.errors import SlicewiseError

OTHER_PLANE = (
    "The view shows another plane of the stack than its slices; slicewise works on the slices themselves: "
    "press the viewer's transpose or roll button until the last two axes are shown."
)

# (id(viewer), action name) → the dock's callback: napari's action manager binds on the Viewer class
_ROUTES: dict[tuple[int, str], Callable[[], Any]] = {}


def _route(name: str) -> Callable[[napari.Viewer], None]:
    def command(viewer: napari.Viewer) -> None:
        action = _ROUTES.get((id(viewer), name))
        if action is not None:
            action()

    return command


def _drop(shortcut: QShortcut) -> None:
    """Disable and delete a shortcut, unless its window (its parent) already deleted it."""
    try:
        shortcut.setEnabled(False)
        shortcut.deleteLater()
    except RuntimeError:  # the wrapped Qt object is gone with the window
        pass


def free_cores() -> int:
    """CPU cores not busy now: those this process may use minus the one-minute load of the others.

    On a machine where other processes keep cores busy, more torch threads than free cores made one
    prediction 8x slower (2.9 s with 2 threads against 0.38 s with one, issue 13).
    """
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    busy = round(os.getloadavg()[0]) if hasattr(os, "getloadavg") else 0
    return max(1, usable - busy)


def use_threads(count: int) -> int:
    """Set torch's CPU threads (0: ``free_cores()``); the count set."""
    count = count or free_cores()
    torch.set_num_threads(count)
    return count


@evented
@dataclass(eq=False)
class DockState:
    """The choices and results the panels share (fields are evented; ``models`` and ``viewer`` are not).

    image: the image layer to segment; model: a bundled or packaged name or an opened path;
    opened_models: checkpoints and foreign models opened in this dock, in order; classes: names the
    person gave for an opened foreign model's classes; proposal: the slicewise labels layer written
    last; target: the person's labels layer that accepts go into.
    """

    viewer: napari.viewer.Viewer = field(repr=False)
    image: Image | None = None
    model: str | None = DEFAULT_MODEL
    device: str = "auto"
    uncertainty: str | None = "entropy"
    classes: tuple[str, ...] = ()
    opened_models: tuple[str, ...] = ()
    proposal: Labels | None = None
    target: Labels | None = None
    models: ModelCache = field(default_factory=dict, repr=False)  # (model, device, classes) → loaded
    _cleanups: list[Callable[[], None]] = field(default_factory=list, repr=False)
    closed: bool = False

    def __post_init__(self) -> None:
        prefer_slicewise_reader()  # File > Open on .nii(.gz)/.nrrd/.dcm picks slicewise's reader, not napari's

    # -- what panels ask of the shared choices --------------------------------------------------

    def forget_model(self, model: str) -> None:
        """An opened model that failed to load leaves the model list (and the choice) again."""
        if model in self.opened_models and not any(key[0] == model for key in self.models):
            if self.model == model:  # first: the model list's refresh would otherwise pick its first entry
                self.model = DEFAULT_MODEL
            self.opened_models = tuple(path for path in self.opened_models if path != model)

    def model_classes(self) -> tuple[str, ...]:
        """The class names given, if the chosen model is one opened here (bundled models keep one cache entry)."""
        return self.classes if self.model in self.opened_models else ()

    def open_model(self, path: str) -> None:
        """A checkpoint or foreign model the person opened becomes a choice, and is chosen."""
        if path not in self.opened_models:
            self.opened_models = (*self.opened_models, path)
        self.model = path

    def request(self, *, quiet: bool = False, **options: Any) -> Request | None:
        """A prediction of the viewed slice as the state describes it, or None (one notification) if incomplete.

        quiet: no notification when the view shows no slice (following the slice says it once, when
        switched on, not at every step). options: the rest of ``Request`` (explain, target_class).
        """
        if self.image is None:
            show_error("Add an image layer first, then choose it in the slicewise widget.")
            return None
        if self.model is None:
            show_error("Choose a bundled model or open a checkpoint file.")
            return None
        ref = self.viewed_slice(self.image, quiet=quiet)
        if ref is None:
            return None
        return Request(
            layer=self.image,
            slice_ref=ref,
            model=self.model,
            device=self.device,
            uncertainty=self.uncertainty,
            classes=self.model_classes(),
            **options,
        )

    def shows_slices(self, layer: Image) -> bool:
        """Whether the view shows ``layer``'s own slices (its last two axes), as slicewise segments
        them: a view rolled or transposed to another plane of a stack does not (a 3D view does not
        show a plane: the dims point still names the slice)."""
        dims = self.viewer.dims
        own = tuple(dims.displayed) == (dims.ndim - 2, dims.ndim - 1)
        return own or dims.ndisplay == 3 or layer.data.ndim - int(layer.rgb) <= 2

    def viewed_slice(self, layer: Image, *, quiet: bool = False) -> SliceRef | None:
        """The slice of ``layer`` under the viewer's dims point, or None (one notification unless ``quiet``),
        also when the view shows another plane (``shows_slices``): the slice under the point would
        not be the plane on screen."""
        try:
            if not self.shows_slices(layer):
                raise SlicewiseError(OTHER_PLANE)
            return slice_ref_from_point(layer.data.shape, layer.world_to_data(self.viewer.dims.point), layer.rgb)
        except SlicewiseError as error:
            if not quiet:
                show_error(str(error))
            return None

    # -- the dock's ties to the viewer, undone by close() ----------------------------------------

    def bind_key(self, key: str, action: Callable[[], Any], description: str = "") -> None:
        """Bind ``key`` (napari's spelling, ``"Shift-A"``) to ``action`` until the dock closes (see the module)."""
        self.viewer.bind_key(key, lambda _viewer: action(), overwrite=True)
        self._cleanups.append(lambda: self.viewer.bind_key(key, None, overwrite=True))
        name = "slicewise:" + re.sub(r"[^a-z0-9]+", "_", (description or key).lower()).strip("_")
        if name not in action_manager._actions:  # registered once per session; listed in the preferences
            action_manager.register_action(name, _route(name), f"slicewise: {description or key}", napari.Viewer)
            action_manager.bind_shortcut(name, key)
        _ROUTES[(id(self.viewer), name)] = action
        self._cleanups.append(lambda: _ROUTES.pop((id(self.viewer), name), None))
        window = getattr(getattr(self.viewer, "window", None), "_qt_window", None)
        if window is not None:  # the keymap hears keys only while the canvas has the focus
            shortcut = QShortcut(QKeySequence(key.replace("-", "+")), window)
            shortcut.activated.connect(action)
            self._cleanups.append(lambda: _drop(shortcut))

    def listen(self, emitter: Any, callback: Callable[..., Any]) -> None:
        """Connect ``callback`` to a viewer or layer event until the dock closes."""
        emitter.connect(callback)
        self._cleanups.append(lambda: emitter.disconnect(callback))

    def on_close(self, cleanup: Callable[[], None]) -> None:
        """Run ``cleanup`` when the dock closes (after its workers were told to quit)."""
        self._cleanups.append(cleanup)

    def close(self) -> None:
        """Unbind the keys, disconnect from the viewer and run the panels' cleanups, newest first; once."""
        if self.closed:
            return
        self.closed = True
        while self._cleanups:
            self._cleanups.pop()()
