"""Reading and writing image files (2D PNG/JPEG/TIFF, TIFF stacks, .npy)."""
