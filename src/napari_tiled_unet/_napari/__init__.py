"""napari widgets, sample data and readers: the only code that imports napari or Qt."""
