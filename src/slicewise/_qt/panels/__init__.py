"""The dock's panels: each a magicgui ``Container`` built as ``Panel(state, runner)``.

A panel reads and writes the shared ``DockState``, runs its work through the ``JobRunner``, and
ties itself to the viewer only through ``state.bind_key``/``state.listen``/``state.on_close``, so
the dock's one close path undoes it. Panels never import the dock or each other.
"""

from __future__ import annotations

from typing import Any

from magicgui.widgets import ComboBox, Container


def row(*widgets: Any) -> Container:
    """Widgets side by side, without labels."""
    return Container(widgets=widgets, layout="horizontal", labels=False)


def show_choice(combo: ComboBox, value: Any) -> None:
    """Show ``value`` (from the state) in ``combo``, refreshing its choices first if it is new there."""
    if value is not None and value not in combo.choices:
        combo.reset_choices()
    combo.value = value
