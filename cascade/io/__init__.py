"""Images and files at the boundaries: range conversions, users' images, grids (images.py), and
crash-safe writes of reports and pictures (atomic.py)."""
