"""The services' metrics follow Prometheus' conventions and carry exactly the agreed names.

Every metric of ours starts with ``theodolite_``; counters end in ``_total``; durations are
``_seconds``; no label could hold a job id, step name or worker id (unbounded series); the
names the deploy files and the ops guide use all exist. Beside ours, only the standard
``process_*`` and ``python_info`` of prometheus_client.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from shared.observability.metrics import PlannerMetrics, PlannerView, StepEnd, WorkerMetrics, task_label
from shared.observability.reasons import DeadLetterReason, RejectReason
from shared.states import JobState

STANDARD = ("process_", "python_")
FORBIDDEN_LABELS = {"job", "job_id", "step", "step_name", "worker", "worker_id", "attempt", "message_id"}
WORKER_NAMES = {"theodolite_steps_started_total": {"task", "device"},
                "theodolite_steps_finished_total": {"task", "device", "state"},
                "theodolite_step_duration_seconds": {"task"},
                "theodolite_worker_slots": {"device"},
                "theodolite_worker_slots_busy": {"device"},
                "theodolite_messages_rejected_total": {"reason"}}
PLANNER_NAMES = {"theodolite_ready_steps": {"device"},
                 "theodolite_oldest_ready_step_age_seconds": {"device"},
                 "theodolite_planner_active_jobs": set(),
                 "theodolite_planner_writer_backlog": set(),
                 "theodolite_planner_lease_held": set(),
                 "theodolite_messages_rejected_total": {"reason"},
                 "theodolite_messages_dead_lettered_total": {"reason"},
                 "theodolite_jobs_finished_total": {"state"}}


def _worker() -> WorkerMetrics:
    metrics = WorkerMetrics("cpu", slots=2)
    with metrics.step("square") as run:
        run.ended(succeeded=True, duration_s=0.2)
    metrics.rejected(RejectReason.WRONG_DEVICE)
    return metrics


def _planner() -> PlannerMetrics:
    metrics = PlannerMetrics(lambda: PlannerView(active_jobs=2, writer_backlog=5, lease_held=True, ready={"gpu": (3, 4.5)}))
    metrics.dead_lettered(DeadLetterReason.DELIVERY_LIMIT)
    metrics.rejected(RejectReason.MALFORMED)
    metrics.job_finished(JobState.SUCCEEDED)
    return metrics


def samples(registry: CollectorRegistry) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """Sample name -> labels -> value, as a scraper reads /metrics."""
    found: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for sample in family.samples:
            found.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return found


def _families(registry: CollectorRegistry) -> list:
    return list(text_string_to_metric_families(generate_latest(registry).decode()))


def _check_conventions(registry: CollectorRegistry) -> None:
    for family in _families(registry):
        if family.name.startswith(STANDARD):
            continue
        assert family.name.startswith("theodolite_"), family.name
        for sample in family.samples:
            if sample.name.endswith("_created"):
                continue
            if family.type == "counter":
                assert sample.name.endswith("_total"), sample.name
            else:
                assert not sample.name.endswith("_total"), f"{sample.name}: only counters end in _total"
            assert not FORBIDDEN_LABELS & set(sample.labels), f"{sample.name} has an unbounded label: {sample.labels}"
        if family.type == "histogram":
            assert family.name.endswith("_seconds"), f"{family.name}: a histogram of durations names its unit"
        assert family.documentation, f"{family.name} has no help text"


def _names(registry: CollectorRegistry) -> dict[str, set[str]]:
    """Exposed name -> its labels (counters with _total, histograms by their base name)."""
    names: dict[str, set[str]] = {}
    for family in _families(registry):
        if family.name.startswith(STANDARD) or family.name.endswith("_created"):  # prometheus_client's creation times
            continue
        name = f"{family.name}_total" if family.type == "counter" else family.name
        labels = {key for sample in family.samples for key in sample.labels if key != "le"}
        names[name] = labels
    return names


def test_worker_metrics_follow_the_conventions_and_have_the_agreed_names() -> None:
    registry = _worker().registry
    _check_conventions(registry)
    assert _names(registry) == WORKER_NAMES


def test_planner_metrics_follow_the_conventions_and_have_the_agreed_names() -> None:
    registry = _planner().registry
    _check_conventions(registry)
    assert _names(registry) == PLANNER_NAMES


def test_each_service_has_a_registry_of_its_own() -> None:
    first, second = WorkerMetrics("cpu", 1), WorkerMetrics("cpu", 1)
    with first.step("square") as run:
        run.ended(succeeded=True, duration_s=0.1)
    assert samples(first.registry)["theodolite_steps_started_total"] == {(("device", "cpu"), ("task", "square")): 1.0}
    assert "theodolite_steps_started_total" not in samples(second.registry)


def test_steps_are_counted_from_start_to_end_with_their_state_and_duration() -> None:
    metrics = WorkerMetrics("gpu", slots=1)
    with metrics.step("fgm") as run:
        assert metrics.executing == 1
        assert samples(metrics.registry)["theodolite_worker_slots_busy"] == {(("device", "gpu"),): 1.0}
        run.ended(succeeded=False, duration_s=3.0)
    try:
        with metrics.step("fgm"):
            raise OSError("MongoDB went away")
    except OSError:
        pass
    found = samples(metrics.registry)
    assert found["theodolite_steps_started_total"] == {(("device", "gpu"), ("task", "fgm")): 2.0}
    assert found["theodolite_steps_finished_total"] == {
        (("device", "gpu"), ("state", StepEnd.FAILED.value), ("task", "fgm")): 1.0,
        (("device", "gpu"), ("state", StepEnd.INTERRUPTED.value), ("task", "fgm")): 1.0}
    assert found["theodolite_step_duration_seconds_count"] == {(("task", "fgm"),): 1.0}, "interrupted steps have no duration"
    assert found["theodolite_step_duration_seconds_sum"] == {(("task", "fgm"),): 3.0}
    assert found["theodolite_worker_slots"] == {(("device", "gpu"),): 1.0}
    assert found["theodolite_worker_slots_busy"] == {(("device", "gpu"),): 0.0}


def test_busy_slots_never_exceed_the_slots() -> None:
    metrics = WorkerMetrics("cpu", slots=1)
    with metrics.step("a"), metrics.step("b"):  # the second waits for the slot
        assert samples(metrics.registry)["theodolite_worker_slots_busy"] == {(("device", "cpu"),): 1.0}


def test_planner_gauges_are_read_at_scrape_time_and_a_device_once_seen_drops_to_zero() -> None:
    view = {"now": PlannerView(active_jobs=1, ready={"cpu": (4, 2.5)}, lease_held=True)}
    metrics = PlannerMetrics(lambda: view["now"])
    found = samples(metrics.registry)
    assert found["theodolite_ready_steps"] == {(("device", "cpu"),): 4.0}
    assert found["theodolite_oldest_ready_step_age_seconds"] == {(("device", "cpu"),): 2.5}
    assert found["theodolite_planner_active_jobs"] == {(): 1.0} and found["theodolite_planner_lease_held"] == {(): 1.0}
    view["now"] = PlannerView()
    found = samples(metrics.registry)
    assert found["theodolite_ready_steps"] == {(("device", "cpu"),): 0.0}
    assert found["theodolite_oldest_ready_step_age_seconds"] == {(("device", "cpu"),): 0.0}
    assert found["theodolite_planner_lease_held"] == {(): 0.0}


def test_every_reason_and_terminal_state_is_exposed_from_the_start() -> None:
    found = samples(PlannerMetrics(PlannerView).registry)
    assert {dict(k)["reason"] for k in found["theodolite_messages_rejected_total"]} == {r.value for r in RejectReason}
    assert {dict(k)["reason"] for k in found["theodolite_messages_dead_lettered_total"]} == {r.value for r in DeadLetterReason}
    assert {dict(k)["state"] for k in found["theodolite_jobs_finished_total"]} == {"succeeded", "failed", "cancelled", "rejected"}


def test_the_task_label_is_the_plugin_function_name() -> None:
    from shared.document.model import JobDocument, Step, TaskBinding

    document = JobDocument.model_construct(tasks={"my_square": TaskBinding(name="my_square", plugin="plugins.math.square")},
                                           steps={"s": Step(name="s", task="my_square")})
    assert task_label(document, "s") == "square"
    assert task_label(document, "missing") == "unknown"
    assert task_label(None, "s") == "unknown"


def test_dead_letter_reasons_outside_the_set_are_unknown() -> None:
    assert DeadLetterReason.of("delivery_limit") is DeadLetterReason.DELIVERY_LIMIT
    assert DeadLetterReason.of("something new") is DeadLetterReason.UNKNOWN
