"""Cancel and resume of a cluster job: the decisions, shared by the CLI and the dashboard.

``theodolite cancel`` / ``theodolite resume`` (:mod:`services.job_actions_cli`) and the
dashboard's ``POST /api/jobs/{id}/cancel`` / ``.../resume`` (:mod:`services.dashboard.app`)
must mean the same thing: the same checks, in the same order, with the same words. So the
decision lives here, once, as async functions over an open :class:`~services.client.Client`
that return an :class:`ActionOutcome` (plain data: whether it was done, why, and the message
people read); printing, exit codes and HTTP statuses stay with each caller.

* cancel: an unknown job is named (not ok); a job that has already ended is left alone (ok, a
  no-op); else the cancel is sent with its grace.
* resume: a job without a stored document was rejected (or does not exist); else
  :func:`~shared.planner.resume_plan.plan_resume` decides (the planner decides again when
  it gets the message: it is the one that writes); else the resume is sent.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from shared.messages import DEFAULT_CANCEL_GRACE_S
from shared.states import FINISHED_JOB_STATES

if TYPE_CHECKING:
    from services.client import Client

RERUN_SHOWN = 8
"""A resume message names this many of the steps it runs again (then ``...``)."""


class ActionCode(StrEnum):
    SENT = "sent"
    """The message went to the planner (confirmed by RabbitMQ)."""
    NOTHING_TO_DO = "nothing_to_do"
    """A cancel of a job that has already ended: left alone."""
    NO_JOB = "no_job"
    REFUSED = "refused"
    """A resume the job cannot have (its problems are in the message)."""


@dataclass(frozen=True)
class ActionOutcome:
    """What a cancel or resume did. ``message`` is what people read (the CLI prefixes
    ``error: `` when not ``ok``)."""

    ok: bool
    message: str
    code: ActionCode
    steps_total: int = 0
    """The job's steps (for following it afterwards)."""
    run: int | None = None
    """A resume sent: the number of the run it starts."""
    rerun: tuple[str, ...] = ()
    """A resume sent: the steps that run again, in document order."""


def no_job(job_id: str, namespace: str) -> str:
    return f"no job named {job_id} in namespace {namespace}"


async def cancel_job(client: Client, job_id: str, grace_s: float = DEFAULT_CANCEL_GRACE_S) -> ActionOutcome:
    """Cancel ``job_id``: nothing new starts, running steps are stopped after ``grace_s``."""
    doc = await client.store.job_state(job_id)
    if doc is None:
        return ActionOutcome(False, no_job(job_id, client.settings.namespace), ActionCode.NO_JOB)
    total = len(doc.get("step_names") or [])
    if doc["state"] in FINISHED_JOB_STATES:
        return ActionOutcome(True, f"job {job_id} has already ended ({doc['state']}): nothing to cancel",
                             ActionCode.NOTHING_TO_DO, steps_total=total)
    await client.cancel(job_id, grace_s)
    return ActionOutcome(True, f"cancel of job {job_id} sent: running steps are stopped within {grace_s:g} s",
                         ActionCode.SENT, steps_total=total)


async def resume_job(client: Client, job_id: str, from_steps: Sequence[str] = (),
                     parameters: Mapping[str, Any] | None = None) -> ActionOutcome:
    """Start ``job_id``'s next run: what did not succeed runs again (and ``from_steps`` with
    their descendants), ``parameters`` replacing stored values for the steps that run."""
    from shared.messages import JobResume
    from shared.planner.resume_plan import plan_resume

    overrides = dict(parameters or {})
    record = await client.store.load_job(job_id)
    if record is None:
        doc = await client.store.job_state(job_id)
        reason = "it was rejected" if doc is not None else no_job(job_id, client.settings.namespace)
        return ActionOutcome(False, f"cannot resume {job_id}: {reason}",
                             ActionCode.REFUSED if doc is not None else ActionCode.NO_JOB)
    steps = await client.store.step_records(job_id)
    dependencies = {name: step.dependencies for name, step in record.document.steps.items()}
    plan = plan_resume(record.state, dependencies, {name: r.state for name, r in steps.items()}, from_steps,
                       overrides, record.document.parameters)
    total = len(record.document.steps)
    if not plan.ok:
        return ActionOutcome(False, f"cannot resume {job_id}: {'; '.join(plan.problems)}", ActionCode.REFUSED,
                             steps_total=total)
    before = await client.store.job_state(job_id)
    run = int((before or {}).get("run") or 1) + 1
    await client.resume(JobResume(job_id=job_id, from_steps=list(from_steps), parameters=overrides))
    shown = ", ".join(plan.rerun[:RERUN_SHOWN]) + (", ..." if len(plan.rerun) > RERUN_SHOWN else "")
    return ActionOutcome(True, f"resume of job {job_id} sent: run {run} runs {len(plan.rerun)} step(s) again ({shown})",
                         ActionCode.SENT, steps_total=total, run=run, rerun=tuple(plan.rerun))
