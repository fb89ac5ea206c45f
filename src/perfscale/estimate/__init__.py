"""The estimate engine: closed-form memory and time of one configuration.

The ranked search over many configurations, plan(), is in the decide layer: perfscale.tune.plan.
"""

from perfscale.estimate.core import estimate
from perfscale.estimate.result import Estimate, MemoryEstimate, TimeEstimate

__all__ = ["Estimate", "MemoryEstimate", "TimeEstimate", "estimate"]
