"""Requests for the same slow work, served by as few runs as keeps every answer fresh.

A ``prune`` takes hundreds of milliseconds (a worker process plans it) and prunes run one at a
time. Answered one by one, requests queue without bound: a client that pipelines thousands of
them, or leaves them behind on closed connections, would make every later prune, the periodic
one included, wait for hours. Yet a run that starts after a request arrived answers it as well
as a run of its own would. So runs of one key go one at a time, and a request joins the run of
its key that is waiting for its turn, if there is one: at most one run per key is ever waiting,
whatever the number of requests.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

import anyio

from gastownd.process.refusals import ShuttingDownError

T = TypeVar("T")


class _Run(Generic[T]):
    def __init__(self) -> None:
        self.ended = anyio.Event()
        self.result: T | None = None
        self.error: BaseException | None = None

    def outcome(self) -> T:
        if self.error is not None:
            raise self.error
        return self.result  # type: ignore[return-value]  # set when error is None


class SharedRuns(Generic[T]):
    """One run at a time; requests that arrive while a run of their key waits share it."""

    def __init__(self) -> None:
        self._turn = anyio.Lock()
        self._waiting: dict[Hashable, _Run[T]] = {}

    async def run(self, key: Hashable, work: Callable[[], Awaitable[T]]) -> T:
        """``work()``'s outcome, from a run that starts after this call (shared or not)."""
        joined = self._waiting.get(key)
        if joined is not None:
            await joined.ended.wait()
            return joined.outcome()
        run: _Run[T] = _Run()
        self._waiting[key] = run
        try:
            async with self._turn:
                # From now on it has started: later requests need a run of their own.
                del self._waiting[key]
                run.result = await work()
        except BaseException as exc:
            # Joiners get the error its own caller gets; a cancellation of the run (only
            # the daemon's stop cancels a request) tells them the daemon stops.
            if isinstance(exc, Exception):
                run.error = exc
            else:
                run.error = ShuttingDownError("the daemon is stopping")
            raise
        finally:
            if self._waiting.get(key) is run:
                del self._waiting[key]  # cancelled while waiting for its turn
            run.ended.set()
        return run.result
