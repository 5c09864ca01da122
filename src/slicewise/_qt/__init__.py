"""Every Qt and napari-widget class of slicewise lives here; the core never imports it."""
