"""The numpy/torch core: slices in, predictions out. Never imports Qt or napari."""
