"""Autosave of the person's labels, and the offer to restore what a crashed slicewise left.

The panel owns the dock's ``Autosaver`` (closed with the dock, which writes every layer and marks
the session cleanly closed). When an earlier slicewise ended without closing (killed, crashed,
power lost) it shows "Unsaved labels from <time> (<names>)" with Restore and Discard, and napari
shows a notification. Restore adds each layer as "<name> (restored)" with its scale and translate,
its provenance back under its tracker, saves it in this session before the old files go, and
makes it the labels that accepts go into.
"""

from __future__ import annotations

from magicgui.widgets import Container, Label, PushButton
from napari.utils.notifications import show_error, show_info
from qtpy.QtWidgets import QSizePolicy

from slicewise._qt.autosave import Autosaver, restore_layer
from slicewise._qt.panels import row
from slicewise._qt.runner import JobRunner
from slicewise._qt.state import DockState
from slicewise.errors import SlicewiseError
from slicewise.io import autosave
from slicewise.io.autosave import SessionInfo


class RestorePanel(Container):
    """The offer to restore, or discard, the unsaved labels of a slicewise that did not close cleanly."""

    def __init__(self, state: DockState, runner: JobRunner) -> None:
        super().__init__(labels=False)
        self._state = state
        self.autosaver = Autosaver(state.viewer, source=lambda: state.image)
        state.on_close(self.autosaver.close)
        self.message = Label(value="")
        self.message.native.setWordWrap(True)
        # the panel's full width: Qt's layouts size a wrapped label for the width they give it,
        # and a label narrower than that wrapped to more lines than laid out, clipping the buttons
        self.message.native.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred)
        self.restore_button = PushButton(text="Restore")
        self.discard_button = PushButton(text="Discard", tooltip="delete the autosaved files")
        self.extend([self.message, row(self.restore_button, self.discard_button)])
        self.restore_button.changed.connect(self.restore)
        self.discard_button.changed.connect(self.discard)
        self.sessions: list[SessionInfo] = autosave.recoverable_sessions(self.autosaver.session.root)
        if self.sessions:
            show_info(
                f"slicewise found unsaved labels from {self.sessions[0].describe()}; "
                "restore or discard them at the top of the slicewise widget."
            )
        self._show()

    def _show(self) -> None:
        if self.sessions:
            self.message.value = f"Unsaved labels from {self.sessions[0].describe()}"
        self.visible = bool(self.sessions)

    def restore(self) -> None:
        """Add the offered session's labels as new layers, save them in this session, delete the old files."""
        info = self.sessions[0]
        try:
            saved = autosave.restore(info.path)
        except SlicewiseError as error:
            show_error(str(error))
            return
        layers = [restore_layer(self._state.viewer, labels) for labels in saved]
        if self.autosaver.save_now(layers):  # the old files go only once this session holds a copy
            autosave.discard(info.path)
        self.sessions.pop(0)
        self._show()
        if layers:
            self._state.target = layers[-1]
            show_info(f"Restored {', '.join(layer.name for layer in layers)}.")

    def discard(self) -> None:
        """Delete the offered session's files."""
        autosave.discard(self.sessions.pop(0).path)
        self._show()
