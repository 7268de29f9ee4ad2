"""``SharedRuns``: a flood of requests for the same work costs two runs, each answer fresh."""

from __future__ import annotations

import anyio
import pytest

from gastownd.eventlog.shared_runs import SharedRuns
from gastownd.process.refusals import BadRequestError, ShuttingDownError

pytestmark = pytest.mark.anyio


class Work:
    """Counts its runs; each run waits until released and answers its own number."""

    def __init__(self) -> None:
        self.runs = 0
        self.release = anyio.Event()
        self.started = anyio.Event()

    async def __call__(self) -> int:
        self.runs += 1
        self.started.set()
        await self.release.wait()
        return self.runs


async def test_requests_waiting_for_a_turn_share_one_run() -> None:
    shared: SharedRuns[int] = SharedRuns()
    work = Work()
    answers: list[int] = []

    async def ask() -> None:
        answers.append(await shared.run("k", work))

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(ask)
        await work.started.wait()  # the first run is going: the rest must wait for it
        for _ in range(500):
            tasks.start_soon(ask)
        await anyio.wait_all_tasks_blocked()
        work.release.set()
    assert work.runs == 2
    # The first request got the first run; every later one a run that started after it asked.
    assert answers == [1] + [2] * 500


async def test_keys_do_not_share_and_runs_never_overlap() -> None:
    shared: SharedRuns[str] = SharedRuns()
    running = 0
    overlapped = False

    async def work(name: str) -> str:
        nonlocal running, overlapped
        running += 1
        overlapped |= running > 1
        await anyio.sleep(0.01)
        running -= 1
        return name

    answers: dict[str, list[str]] = {"a": [], "b": []}

    async def ask(key: str) -> None:
        answers[key].append(await shared.run(key, lambda: work(key)))

    async with anyio.create_task_group() as tasks:
        for _ in range(20):
            tasks.start_soon(ask, "a")
            tasks.start_soon(ask, "b")
    assert answers == {"a": ["a"] * 20, "b": ["b"] * 20}
    assert not overlapped


async def test_an_error_reaches_every_request_of_its_run_and_the_next_run_is_new() -> None:
    shared: SharedRuns[int] = SharedRuns()
    calls = 0
    blocker = Work()

    async def failing() -> int:
        nonlocal calls
        calls += 1
        raise BadRequestError("refused")

    errors: list[str] = []

    async def ask() -> None:
        try:
            await shared.run("k", failing)
        except BadRequestError as exc:
            errors.append(exc.message)

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(shared.run, "other", blocker)
        await blocker.started.wait()
        for _ in range(10):
            tasks.start_soon(ask)
        await anyio.wait_all_tasks_blocked()
        blocker.release.set()
    assert calls == 1 and errors == ["refused"] * 10
    with pytest.raises(BadRequestError):
        await shared.run("k", failing)
    assert calls == 2


async def test_a_cancelled_run_tells_its_joiners_the_daemon_stops() -> None:
    shared: SharedRuns[int] = SharedRuns()
    work = Work()
    outcomes: list[str] = []

    async def join() -> None:
        try:
            await shared.run("k", work)
        except ShuttingDownError:
            outcomes.append("shutting_down")

    owner_scope = anyio.CancelScope()
    second_scope = anyio.CancelScope()
    second = Work()

    async def owner() -> None:
        with owner_scope:
            await shared.run("k", work)

    async def second_owner() -> None:
        with second_scope:
            await shared.run("k", second)

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(owner)
        await work.started.wait()
        # The first run is under way, so this one waits for its turn: it is cancelled there.
        tasks.start_soon(second_owner)
        await anyio.wait_all_tasks_blocked()
        for _ in range(3):
            tasks.start_soon(join)
        await anyio.wait_all_tasks_blocked()
        second_scope.cancel()
        await anyio.wait_all_tasks_blocked()
        assert outcomes == ["shutting_down"] * 3
        owner_scope.cancel()
    assert second.runs == 0
    # Nothing is left waiting: a new request runs at once.
    fresh = Work()
    fresh.release.set()
    assert await shared.run("k", fresh) == 1
