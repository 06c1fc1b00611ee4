"""Waiting for something outside the process: the one polling loop of the project.

A server coming up, a process going away, an export being prepared: each asks the same question
again every ``interval`` seconds until it answers or ``timeout`` runs out. A predicate may also
raise to stop the wait early (a server process that died while we waited for its port).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class WaitTimeout(TimeoutError):
    """The condition did not hold within the timeout."""


def wait_until(
    predicate: Callable[[], T],
    timeout: float,
    interval: float = 0.2,
    what: str = "the condition",
) -> T:
    """Call ``predicate`` until it returns a truthy value and return that value; raise
    :class:`WaitTimeout` (naming ``what``) when ``timeout`` seconds pass first. The predicate is
    always called at least once, and once more at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        left = deadline - time.monotonic()
        if left <= 0:
            raise WaitTimeout(f"{what} not done after {timeout:.0f} s")
        time.sleep(min(interval, left))
