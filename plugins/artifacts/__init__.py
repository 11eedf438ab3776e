"""Artifact plugins: serialisers (value -> bytes), loaders (bytes -> value), file save/load.

No pickle anywhere: arrays use ``.npy``/``.npz`` (loaded with ``allow_pickle=False``),
tables use CSV, anything JSON-shaped uses JSON.
"""
