"""Tile planning and overlap-tile stitching."""
