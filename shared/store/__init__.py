"""MongoDB persistence of the distributed mode: jobs, steps (with outputs), events, GridFS values."""

from shared.store.mongo import Finish, JobRecord, StepRecord, Store
from shared.store.states import ACTIVE_JOB_STATES, FINAL_STEP_STATES, StoredStepState

__all__ = ["ACTIVE_JOB_STATES", "FINAL_STEP_STATES", "Finish", "JobRecord", "StepRecord", "Store", "StoredStepState"]
