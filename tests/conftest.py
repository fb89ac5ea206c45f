"""Shared test setup: GPU tests skip without CUDA; tests never touch the network."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

import pytest

# No test may reach the Hugging Face Hub: a hub id that is not cached must fail fast and clearly.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Nor read or write the user's perfscale cache (results store, ONNX exports, CPU calibration): a
# calibration stored by an earlier `perfscale plan --calibrate` would change local CPU estimates.
os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="perfscale-tests-cache-")
atexit.register(shutil.rmtree, os.environ["XDG_CACHE_HOME"], ignore_errors=True)
# The README runs the suite on 2 xdist workers; with torch's default of one OpenMP thread per core in each,
# the workers (and the processes they start) oversubscribe the cores, and OpenMP's spinning barriers then make
# a forward up to ~60x slower while the other worker computes (FIELD-NOTES; measured here: MiniLM's whole-corpus
# check 29 s alone, 129 s in the suite). So each worker, and what it starts, gets its share of the cores unless
# the caller chose (tests that measure threads set them explicitly).
_workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _workers > 1:
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // _workers)))


def pytest_collection_modifyitems(config, items):
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except ImportError:
        has_cuda = False
    if has_cuda:
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
