"""The dock's one shared state: what the person chose, what is open, what was proposed.

Every panel receives the same ``DockState`` (and the ``JobRunner``); a panel writes the fields its
controls own and follows the others through ``state.events.<field>`` (psygnal, emitted only on a
real change). No panel reaches into another. The state also keeps the dock's ties to the viewer —
key bindings, viewer event connections, things to close — so the dock has one close path.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import napari
from napari.layers import Image, Labels
from napari.utils.notifications import show_error
from psygnal import evented

from slicewise._qt.jobs import ModelCache, Request
from slicewise.api import DEFAULT_MODEL
from slicewise.core.slices import slice_ref_from_point
from slicewise.core.types import SliceRef
from slicewise.errors import SlicewiseError


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

    # -- what panels ask of the shared choices --------------------------------------------------

    def model_classes(self) -> tuple[str, ...]:
        """The class names given, if the chosen model is one opened here (bundled models keep one cache entry)."""
        return self.classes if self.model in self.opened_models else ()

    def open_model(self, path: str) -> None:
        """A checkpoint or foreign model the person opened becomes a choice, and is chosen."""
        if path not in self.opened_models:
            self.opened_models = (*self.opened_models, path)
        self.model = path

    def request(self, **options: Any) -> Request | None:
        """A prediction of the viewed slice as the state describes it, or None (one notification) if incomplete.

        options: the rest of ``Request`` (explain, target_class).
        """
        if self.image is None:
            show_error("Add an image layer first, then choose it in the slicewise widget.")
            return None
        if self.model is None:
            show_error("Choose a bundled model or open a checkpoint file.")
            return None
        ref = self.viewed_slice(self.image)
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

    def viewed_slice(self, layer: Image) -> SliceRef | None:
        """The slice of ``layer`` under the viewer's dims point, or None (one notification)."""
        try:
            return slice_ref_from_point(layer.data.shape, layer.world_to_data(self.viewer.dims.point), layer.rgb)
        except SlicewiseError as error:
            show_error(str(error))
            return None

    # -- the dock's ties to the viewer, undone by close() ----------------------------------------

    def bind_key(self, key: str, action: Callable[[], Any]) -> None:
        """Bind ``key`` on the viewer to ``action`` until the dock closes."""
        self.viewer.bind_key(key, lambda _viewer: action(), overwrite=True)
        self._cleanups.append(lambda: self.viewer.bind_key(key, None, overwrite=True))

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
