"""Metric plugins: classification performance, perturbation distances, metric reports.

Tables are dicts of equal-length column lists of Python scalars, ready for the
artifact serialisers in :mod:`plugins.artifacts`.
"""
