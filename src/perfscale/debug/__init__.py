"""Troubleshooting engines: where values overflow (overflow.py), whether the cluster works (dist.py),
where a step's time goes (profile.py). Each returns a typed result with a verdict in words."""

from perfscale.debug.overflow import OverflowResult, debug_overflow

__all__ = ["OverflowResult", "debug_overflow"]
