"""Keep third-party progress bars and warnings off the user's terminal while we load models."""

from __future__ import annotations

import contextlib
import warnings


@contextlib.contextmanager
def quiet_transformers():
    """transformers at error verbosity, its progress bars off, warnings filtered; restored afterwards."""
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()
