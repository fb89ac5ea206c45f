"""The estimate engine: closed-form memory and time of a configuration, and the ranked plan."""

from perfscale.estimate.core import estimate
from perfscale.estimate.result import Estimate, MemoryEstimate, PlanResult, TimeEstimate


def plan(*args, **kwargs):
    """See perfscale.estimate.plan.plan (imported lazily)."""
    from perfscale.estimate.plan import plan as _plan

    return _plan(*args, **kwargs)


__all__ = ["Estimate", "MemoryEstimate", "PlanResult", "TimeEstimate", "estimate", "plan"]
