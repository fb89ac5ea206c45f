"""Typed errors for a user's mistakes.

Every message names the bad value, the valid choices (or the closest names) and the next step.
Only `perfscale.cli` turns these into exit codes (2 for a user's mistake).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class PerfscaleError(Exception):
    """Base class: something the user can fix. The message says how."""


class UnknownNameError(PerfscaleError):
    """A catalogue name (model, hardware, choice) that does not exist."""


class ConfigFileError(PerfscaleError):
    """A config.json that cannot be read, parsed or is missing a field."""


class OfflineError(PerfscaleError):
    """Something needed the network and there is none (or the user asked for offline)."""


class TopologyError(PerfscaleError):
    """A topology string or a parallel layout that cannot work."""


class InvalidConfigError(PerfscaleError):
    """A knob value or a combination of knobs that cannot work."""


class UnsupportedModelError(PerfscaleError):
    """An architecture that a given engine cannot handle."""


class StoreError(PerfscaleError):
    """A results store that cannot be opened, read or written (bad path, read-only, not a store)."""


def closest(value: str, choices: Iterable[str], n: int = 3) -> list[str]:
    """The few choices that look most like `value` (case-insensitive)."""
    choices = list(choices)
    lowered = {c.lower(): c for c in choices}
    matches = difflib.get_close_matches(value.lower(), list(lowered), n=n, cutoff=0.5)
    # Substring hits ("llama" -> "llama-3.1-8b") help where edit distance does not.
    matches += [c for c in lowered if value.lower() in c and c not in matches]
    return [lowered[m] for m in matches[:n]]


def choice_error(
    what: str, value: object, choices: Iterable[str], next_step: str, cls: type = InvalidConfigError
) -> PerfscaleError:
    """Build the standard 'unknown X: Y. Choose from [...]' error."""
    choices = list(choices)
    message = f"Unknown {what}: {value!r}. Choose from: {', '.join(choices)}."
    if next_step:
        message += f" {next_step}"
    return cls(message)
