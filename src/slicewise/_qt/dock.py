"""The slicewise dock: one shared state, one job runner, the panels, one close path.

The dock only composes. Each panel is built from the state and the runner alone and reached
as an attribute named by its key (``dock.edit``, ``dock.prompts``, …, magicgui's lookup by
widget name). A new panel is one new module under ``_qt/panels/`` and one line in ``PANELS``.
Closing the dock (napari destroys its widget) quits every worker first, then the state undoes
what the panels tied to the viewer: key bindings, event connections, the autosaver. The dock
scrolls: it is taller than a laptop's screen, and napari would otherwise grow the window past the
screen (every frame of a taller window costs more to draw: docs/speed.md, "The viewer path").
"""

from __future__ import annotations

import napari
from magicgui.widgets import Container
from qtpy.QtWidgets import QWidget

from slicewise._qt.panels.edit import EditPanel
from slicewise._qt.panels.evaluate import EvaluatePanel
from slicewise._qt.panels.model import ModelPanel
from slicewise._qt.panels.predict import PredictPanel
from slicewise._qt.panels.prompts import PromptPanel
from slicewise._qt.panels.restore import RestorePanel
from slicewise._qt.panels.review import ReviewPanel
from slicewise._qt.panels.teach import TeachPanel
from slicewise._qt.runner import JobRunner
from slicewise._qt.state import DockState

# top to bottom; the key is the panel's attribute on the dock
PANELS = {
    "restore": RestorePanel,
    "source": ModelPanel,
    "predict": PredictPanel,
    "review": ReviewPanel,
    "prompts": PromptPanel,
    "teach": TeachPanel,
    "edit": EditPanel,
    "evaluate": EvaluatePanel,
}


class SlicewiseDock(Container):
    """The dock widget napari opens (``napari.yaml``): the panels over one ``DockState``."""

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        super().__init__(labels=False, scrollable=True)
        self.state = DockState(viewer)
        self.runner = JobRunner()
        for name, panel in PANELS.items():
            widget = panel(self.state, self.runner)
            widget.name = name
            self.append(widget)
        self.native.destroyed.connect(self.close_dock)

    @property
    def native(self) -> QWidget:
        """The scroll area around the panels: what napari docks (it docks ``native``, not magicgui's root)."""
        return self.root_native_widget

    def close_dock(self) -> None:
        """Quit the workers, then unbind keys and disconnect from the viewer (once)."""
        self.runner.close()
        self.state.close()
