"""Shared test setup: GPU tests skip without CUDA; tests never touch the network."""

from __future__ import annotations

import os

import pytest

# No test may reach the Hugging Face Hub: a hub id that is not cached must fail fast and clearly.
os.environ.setdefault("HF_HUB_OFFLINE", "1")


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
