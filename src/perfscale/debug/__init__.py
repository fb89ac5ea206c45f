"""Troubleshooting engines: where values overflow (overflow.py), whether the cluster works (dist.py),
where a step's time goes (profile.py). Each returns a typed result with a verdict in words."""

from perfscale.debug.dist import DistResult, debug_dist
from perfscale.debug.overflow import OverflowResult, debug_overflow
from perfscale.debug.profile import ProfileResult, debug_profile, profile_step

__all__ = ["DistResult", "OverflowResult", "ProfileResult", "debug_dist", "debug_overflow", "debug_profile", "profile_step"]
