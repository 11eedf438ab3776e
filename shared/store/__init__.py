"""MongoDB persistence of the distributed mode: jobs, steps (with outputs), events, GridFS values."""

from shared.store.mongo import JobRecord, Store
from shared.store.steps import Finish, StepRecord

__all__ = ["Finish", "JobRecord", "StepRecord", "Store"]
