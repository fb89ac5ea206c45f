"""Typed errors of the bigmodel engine (PerfscaleError: the CLI exits 2 with the message)."""

from __future__ import annotations

from perfscale.errors import PerfscaleError


class CheckpointError(PerfscaleError):
    """A checkpoint folder or file that cannot be read, is inconsistent, or is not safe to read."""


class UnsafePickleError(CheckpointError):
    """A .bin whose pickle needs more than torch.load(weights_only=True): refused, never executed."""


class PlacementError(PerfscaleError):
    """A placement that cannot work: bad budgets, or a model that does not fit even with disk offload."""
