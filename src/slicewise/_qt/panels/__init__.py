"""The dock's panels: each a magicgui ``Container`` built as ``Panel(state, runner)``.

A panel reads and writes the shared ``DockState``, runs its work through the ``JobRunner``, and
ties itself to the viewer only through ``state.bind_key``/``state.listen``/``state.on_close``, so
the dock's one close path undoes it. Panels never import the dock or each other.
"""
