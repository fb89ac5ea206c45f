"""Printing a result: exactly one JSON document on stdout with --json, a Rich rendering otherwise."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any


def print_json(document: Any) -> None:
    sys.stdout.write(json.dumps(document, indent=2, default=str, allow_nan=False) + "\n")
    sys.stdout.flush()


def console():
    from rich.console import Console

    return Console()


def emit(document: Any, as_json: bool, render: Callable[[Any], None]) -> None:
    """`render` draws the human view; it gets the console as its only argument."""
    if as_json:
        print_json(document)
    else:
        render(console())
