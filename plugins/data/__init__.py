"""Dataset plugins. A dataset is a dict of equal-length arrays: ``{"x": ..., "y": ...}``."""
