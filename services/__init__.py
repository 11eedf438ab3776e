"""Theodolite's processes: the CLI, the embedded runner's display, planner and workers."""
