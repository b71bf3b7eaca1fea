"""Which event loop a process of ours runs on."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The event loop for a node or a benchmark client; asyncio's own where uvloop is missing."""
    if name == "uvloop":
        try:
            import uvloop
        except ImportError:
            logging.getLogger(__name__).warning("uvloop is not installed; using asyncio's event loop")
            return None
        return uvloop.new_event_loop
    return None


def run(coro: Coroutine[Any, Any, T], name: str = "uvloop") -> T:
    """``asyncio.run`` on the chosen loop."""
    with asyncio.Runner(loop_factory=loop_factory(name)) as runner:
        return runner.run(coro)
