"""Classifier plugins in pure JAX.

A model is a plain dict ``{"kind": "mlp" | "cnn", "config": {...}, "params": {...}}``
whose params are nested dicts/lists of float32 numpy arrays, so it can be stored and
passed between steps without pickling. Forward passes live in :mod:`.networks`.
"""
