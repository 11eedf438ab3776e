"""One job with artifact inputs and outputs, and its input files, for `run` and `submit` tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np

DOCUMENT = """
artifact_inputs:
  weights: [{array: any}]
  pair: [{left: any}, {right: any}]
graph:
  total: {sum_values: [[$pair.left, $pair.right]]}
  echoed: {echo: [$weights]}
artifact_outputs:
  saved: {contents: $echoed, task: {name: array_to_npy}}
  summary: {contents: $total, task: {name: value_to_json}}
"""


def write_job(directory: Path) -> tuple[Path, list[str]]:
    """The document and its input files in ``directory``; returns the document and the
    ``--artifact`` options that supply the inputs."""
    np.save(directory / "weights.npy", np.arange(6, dtype=np.float32).reshape(2, 3))
    (directory / "pair.json").write_text("[10, 20]")
    document = directory / "artifacts.yaml"
    document.write_text(DOCUMENT)
    return document, ["--artifact", f"weights={directory / 'weights.npy'}", "--artifact", f"pair={directory / 'pair.json'}"]
