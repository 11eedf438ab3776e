"""The metrics theodolite's services export (planner and workers, on THEODOLITE_METRICS_PORT).

The Prometheus rules, the KEDA triggers and the ops guide may name only these (plus the series
Prometheus derives from them and ``up``); the checks fail on any other name, so a renamed metric
cannot silently leave an alert or the autoscaler looking at nothing.
"""

from __future__ import annotations

THEODOLITE_METRICS: dict[str, str] = {
    "theodolite_steps_started_total": "counter",
    "theodolite_steps_finished_total": "counter",
    "theodolite_step_duration_seconds": "histogram",
    "theodolite_ready_steps": "gauge",
    "theodolite_oldest_ready_step_age_seconds": "gauge",
    "theodolite_worker_slots": "gauge",
    "theodolite_worker_slots_busy": "gauge",
    "theodolite_planner_active_jobs": "gauge",
    "theodolite_planner_writer_backlog": "gauge",
    "theodolite_planner_lease_held": "gauge",
    "theodolite_messages_rejected_total": "counter",
    "theodolite_messages_dead_lettered_total": "counter",
}
STANDARD_SERIES = frozenset({"up", "scrape_duration_seconds", "scrape_samples_scraped"})
SUFFIXES = {"counter": ("", "_created"), "gauge": ("",), "histogram": ("_bucket", "_sum", "_count", "_created")}


def known_series() -> frozenset[str]:
    """Every series name a query may use."""
    names = {name + suffix for name, kind in THEODOLITE_METRICS.items() for suffix in SUFFIXES[kind]}
    return frozenset(names | STANDARD_SERIES)
