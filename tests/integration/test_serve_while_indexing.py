"""Serving before the index is complete: a big log with no snapshot is indexed in the
background while ``ping``, ``emit``, ``hook`` and ``status`` answer (issue 21).

The background index is held back (``GASTOWND_TEST_HOLD_INDEXING``) until the test
releases it, so "before indexing finishes" is what ``status.indexing`` says, not a
matter of timing.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import anyio
import msgspec
import pytest

from gastown_client import paths
from gastown_client.aclient import AsyncClient
from gastown_client.client import Client
from gastown_client.protocol import Hook, HookResult
from gastownd.eventlog import background_index, event_log, recovery
from gastownd.process.app import App, build_state
from tests.conftest import DaemonProcess, run_ctl
from tests.integration.test_service import notify_socket, receive_until, spawn_supervised

pytestmark = pytest.mark.anyio

LINES = 200_000
PROBE_EVERY = 1_000  # one old line in this many is a "probe", to follow a few lines only
PROBES = LINES // PROBE_EVERY


@pytest.fixture(scope="module")
def big_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ~30 MB log of LINES lines, well past the background threshold."""
    path = tmp_path_factory.mktemp("biglog") / "events.jsonl"
    lines = []
    for i in range(LINES):
        kind = "probe" if i % PROBE_EVERY == 0 else "gt_write"
        payload = json.dumps({"i": i, "pad": "x" * (i % 80)})
        lines.append(
            f'{{"ts":"2026-11-25T00:00:00Z","source":"gt","type":"{kind}",'
            f'"actor":"writer","payload":{payload},"visibility":"feed"}}\n'
        )
    path.write_text("".join(lines))
    assert path.stat().st_size > recovery.BACKGROUND_MIN_BYTES
    return path


@pytest.fixture
def held_town(town: Path, big_log: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The town with the big log; its background index waits for ``release(town)``."""
    shutil.copyfile(big_log, paths.events_path(town))
    monkeypatch.setenv(background_index.TEST_HOLD_INDEXING_ENV, str(_release_file(town)))
    yield town
    release(town)  # never leave a worker thread waiting


def _append_line(path: Path, line: dict[str, object]) -> None:
    with open(path, "a") as log:
        log.write(json.dumps(line) + "\n")


def _release_file(town: Path) -> Path:
    return town / "release-indexing"


def release(town: Path) -> None:
    _release_file(town).touch()


@pytest.fixture
async def daemon(held_town: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Path]:
    monkeypatch.setattr(event_log, "QUERY_WAIT_S", 0.2)
    state = build_state(held_town, paths.default_config_path(held_town))
    app = App(state, install_signal_handlers=False)
    async with anyio.create_task_group() as tg:
        await tg.start(app.run)
        try:
            yield state.paths.socket
        finally:
            release(held_town)
            app.stop()


async def _until_indexed(client: AsyncClient, timeout_s: float = 30.0) -> None:
    with anyio.fail_after(timeout_s):
        while (await client.status()).indexing is not None:  # noqa: ASYNC110 - polling the daemon
            await anyio.sleep(0.05)


def _wait_until_indexed(client: Client, proc: DaemonProcess, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while client.status().indexing is not None:
        assert time.monotonic() < deadline, proc.log()
        time.sleep(0.05)


def _session_start(session: str) -> Hook:
    payload = {
        "session_id": session,
        "transcript_path": f"/tmp/{session}.jsonl",
        "cwd": "/tmp",
        "hook_event_name": "SessionStart",
        "source": "startup",
    }
    env = {"GT_ROLE": "gastown/crew/max", "GT_SESSION": "gt-max"}
    return Hook(payload=msgspec.Raw(json.dumps(payload).encode()), env=env, cwd="/tmp")


async def test_answers_before_the_index_is_complete(daemon: Path, held_town: Path) -> None:
    async with AsyncClient(daemon) as client:
        await client.ping()
        await client.hello()
        before = (await client.status()).indexing
        assert before is not None
        assert before.lines == LINES - (await client.status()).eventlog.lines
        assert before.bytes_total > 0
        emitted = await client.emit("during", "tester", {"n": 1})
        hooked = await client.call(_session_start("s-during"))
        assert isinstance(hooked, HookResult)
        # A query cannot wait for the held index: it answers from what is indexed, flagged.
        partial = await client.query(types=["during"])
        assert partial.indexing is not None
        assert len(partial.events) == 1
        # The same for a town-wide query (the local part is what is indexed so far).
        town_wide = await client.query(types=["during"], all_nodes=True)
        assert town_wide.indexing is not None
        assert len(town_wide.events) == 1
        # Still indexing: everything above was answered before the index was complete.
        assert (await client.status()).indexing is not None

        release(held_town)
        await _until_indexed(client)
        status = await client.status()
        assert status.indexing is None
        assert status.eventlog.lines >= LINES + 2  # the emit and the hook's session_start
        whole = await client.query(types=["during"])
        assert whole.indexing is None
        assert (await client.query(types=["during"], all_nodes=True)).indexing is None
        assert [json.loads(bytes(e))["payload"] for e in whole.events] == [{"n": 1}]
        assert whole.cursor.split(":")[0] == emitted.cursor.split(":")[0]
        probes = await client.query(types=["probe"], limit=PROBES + 10, oldest_first=True)
        assert [json.loads(bytes(e))["payload"]["i"] for e in probes.events] == list(
            range(0, LINES, PROBE_EVERY)
        )
        starts = await client.query(types=["session_start"])
        assert len(starts.events) == 1


async def test_gastownctl_shows_that_indexing_is_under_way(daemon: Path, held_town: Path) -> None:
    async with AsyncClient(daemon) as client:
        await client.emit("during", "tester", {"n": 1})
        progress = (await client.status()).indexing
        assert progress is not None
        status = await anyio.to_thread.run_sync(run_ctl, held_town, "status")
        assert status.returncode == 0, status.stderr
        row = next(line for line in status.stdout.splitlines() if "indexing" in line)
        assert f"{progress.lines:,} older lines still being indexed (0% of" in row
        events = await anyio.to_thread.run_sync(
            run_ctl, held_town, "events", "--type", "during", "--json"
        )
        assert events.returncode == 0, events.stderr
        # stdout stays the lines alone; the warning goes to stderr.
        assert [json.loads(line)["payload"] for line in events.stdout.splitlines()] == [{"n": 1}]
        assert "partial answer" in events.stderr

        release(held_town)
        await _until_indexed(client)
        status = await anyio.to_thread.run_sync(run_ctl, held_town, "status")
        assert "indexing" not in status.stdout
        events = await anyio.to_thread.run_sync(run_ctl, held_town, "events", "--type", "during")
        assert events.returncode == 0
        assert events.stderr == ""


@pytest.mark.parametrize("all_nodes", [False, True], ids=["local", "town_wide"])
async def test_a_query_waits_for_an_index_that_finishes_in_time(
    daemon: Path, held_town: Path, monkeypatch: pytest.MonkeyPatch, all_nodes: bool
) -> None:
    monkeypatch.setattr(event_log, "QUERY_WAIT_S", 30.0)
    async with AsyncClient(daemon) as client:
        assert (await client.status()).indexing is not None
        release(held_town)
        result = await client.query(types=["probe"], limit=PROBES + 10, all_nodes=all_nodes)
        assert result.indexing is None
        assert len(result.events) == PROBES


async def test_subscribers_during_indexing_get_every_line_once(
    daemon: Path, held_town: Path
) -> None:
    async with (
        AsyncClient(daemon) as writer,
        AsyncClient(daemon) as live,
        AsyncClient(daemon) as from_start,
    ):
        assert (await writer.status()).indexing is not None
        live_pushes = await live.subscribe(types=["probe"])  # from now on: answered at once
        first = await writer.emit("probe", "tester", {"i": "e0"})
        received: list[tuple[str, object]] = []

        async def follow_from_start() -> None:
            # Waits for the index, then replays from the first line.
            pushes = await from_start.subscribe(types=["probe"], cursor="start")
            async for cursor, event in pushes:
                received.append((cursor, json.loads(bytes(event))["payload"]["i"]))
                if len(received) == PROBES + 3:
                    return

        with anyio.fail_after(60):
            async with anyio.create_task_group() as tg:
                tg.start_soon(follow_from_start)
                await anyio.sleep(0.2)
                assert (await writer.status()).indexing is not None
                await writer.emit("probe", "tester", {"i": "e1"})
                release(held_town)
                await _until_indexed(writer)
                await writer.emit("probe", "tester", {"i": "e2"})
        olds = list(range(0, LINES, PROBE_EVERY))
        assert [i for _, i in received] == [*olds, "e0", "e1", "e2"]
        seqs = [int(c.split(":")[1]) for c, _ in received]
        assert seqs == sorted(set(seqs))
        live_got = []
        with anyio.fail_after(10):
            async for _cursor, event in live_pushes:
                live_got.append(json.loads(bytes(event))["payload"]["i"])
                if len(live_got) == 3:
                    break
        assert live_got == ["e0", "e1", "e2"]

    # Resuming from a cursor handed out during indexing: the lines after it, once.
    async with AsyncClient(daemon) as resumed:
        pushes = await resumed.subscribe(types=["probe"], cursor=first.cursor)
        got = []
        with anyio.fail_after(10):
            async for _cursor, event in pushes:
                got.append(json.loads(bytes(event))["payload"]["i"])
                if len(got) == 2:
                    break
        assert got == ["e1", "e2"]


def test_kill_during_background_indexing_loses_nothing(town: Path, big_log: Path) -> None:
    shutil.copyfile(big_log, paths.events_path(town))
    hold = town / "never"
    env = {**os.environ, background_index.TEST_HOLD_INDEXING_ENV: str(hold)}
    first = DaemonProcess(town, env=env).wait_ready()
    try:
        with first.client() as client:
            assert client.status().indexing is not None
            cursors = [client.emit("probe", "tester", {"i": f"k{n}"}).cursor for n in range(5)]
            assert client.status().indexing is not None
    finally:
        first.kill()
    second = DaemonProcess(town).wait_ready()
    try:
        with second.client() as client:
            _wait_until_indexed(client, second)
            assert client.status().eventlog.lines == LINES + 5
            probes = client.query(types=["probe"], limit=PROBES + 10, oldest_first=True)
            got = [json.loads(bytes(e))["payload"]["i"] for e in probes.events]
            assert got == [*range(0, LINES, PROBE_EVERY), *(f"k{n}" for n in range(5))]
            # The cursors handed out before the kill still name the same lines.
            with Client(second.socket) as follower:
                pushes = iter(follower.subscribe(types=["probe"], cursor=cursors[2]))
                assert [json.loads(bytes(next(pushes)[1]))["payload"]["i"] for _ in range(2)] == [
                    "k3",
                    "k4",
                ]
    finally:
        assert second.terminate() == 0, second.log()


async def test_a_death_logged_while_down_ends_its_wisp_before_serving(
    held_town: Path,
) -> None:
    """The lines gt wrote while the daemon was down are at the log's end, indexed before
    the socket serves: the recorder reads them then, as with a snapshot."""
    session = "00000070-3caa-4bbb-8ccc-123456789abc"
    actor = "gastown/polecats/nux"
    state = build_state(held_town, paths.default_config_path(held_town))
    release(held_town)
    app = App(state, install_signal_handlers=False)
    async with anyio.create_task_group() as tg:
        daemon = await tg.start(app.run)
        async with AsyncClient(state.paths.socket) as client:
            await _until_indexed(client)
            await client.session_start(session, actor, tmux_session="gt-nux")
            head = int(daemon.eventlog.head_cursor().split(":")[1])
            with anyio.fail_after(10):
                while daemon.sessions.recorded_seq() < head:  # noqa: ASYNC110 - its own state
                    await anyio.sleep(0.02)
        app.stop()
    # While down: no snapshot any more (a lost one), and gt logs the session's death.
    (state.paths.private_dir / recovery.SNAPSHOT_NAME).unlink()
    death = {
        "ts": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "source": "gt",
        "type": "session_death",
        "actor": "gastown/witness",
        "payload": {"session": "gt-nux", "agent": actor, "reason": "zombie", "caller": "w"},
        "visibility": "feed",
    }
    _append_line(paths.events_path(held_town), death)
    _release_file(held_town).unlink()

    app = App(build_state(held_town), install_signal_handlers=False)
    async with anyio.create_task_group() as tg:
        await tg.start(app.run)
        try:
            async with AsyncClient(state.paths.socket) as client:
                assert (await client.status()).indexing is not None
                assert (await client.wisp(session)).state != "open"
                assert (await client.status()).indexing is not None
        finally:
            release(held_town)
            app.stop()


def test_a_stop_during_background_indexing_is_clean(town: Path, big_log: Path) -> None:
    """SIGTERM while the background index runs: a clean, prompt exit, no snapshot of a
    partial index, and the next start indexes everything."""
    shutil.copyfile(big_log, paths.events_path(town))
    env = {**os.environ, background_index.TEST_HOLD_INDEXING_ENV: str(town / "never")}
    first = DaemonProcess(town, env=env).wait_ready()
    with first.client() as client:
        assert client.status().indexing is not None
        client.emit("probe", "tester", {"i": "t0"})
    assert first.terminate(timeout_s=10) == 0, first.log()
    assert not (paths.private_dir(town) / recovery.SNAPSHOT_NAME).exists()
    second = DaemonProcess(town).wait_ready()
    try:
        with second.client() as client:
            _wait_until_indexed(client, second)
            assert client.status().eventlog.lines == LINES + 1
    finally:
        assert second.terminate() == 0, second.log()


def test_sd_notify_status_follows_the_background_index(town: Path, big_log: Path) -> None:
    shutil.copyfile(big_log, paths.events_path(town))
    notify, address = notify_socket(town)
    release_path = _release_file(town)
    proc = spawn_supervised(
        town, {"NOTIFY_SOCKET": address, background_index.TEST_HOLD_INDEXING_ENV: str(release_path)}
    )
    try:
        ready = next(m for m in receive_until(notify, "READY=1") if "READY=1" in m)
        assert "indexing" in ready, ready
        with Client(paths.socket_path(town)) as client:
            assert client.ping().pong
        release(town)
        deadline = time.monotonic() + 30
        statuses: list[str] = []
        while not any("events indexed" in s for s in statuses):
            assert time.monotonic() < deadline, statuses
            statuses.append(notify.recv(4096).decode())
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        notify.close()


def test_a_snapshot_followed_by_a_long_stretch_is_indexed_in_the_background(
    town: Path, big_log: Path
) -> None:
    """A snapshot of the log's first part, then more than the background threshold written
    while the daemon was down: the background index extends the snapshot (found by the
    kill -9 stress test, where every such start failed the same way)."""
    first_part = big_log.read_bytes()[: 2 * 1024 * 1024]
    first_part = first_part[: first_part.rindex(b"\n") + 1]
    paths.events_path(town).write_bytes(first_part)
    first = DaemonProcess(town).wait_ready()
    with first.client() as client:
        snapshot_lines = client.status().eventlog.lines
    assert first.terminate() == 0, first.log()
    assert (paths.private_dir(town) / recovery.SNAPSHOT_NAME).exists()
    with open(paths.events_path(town), "ab") as log:
        log.write(big_log.read_bytes())
    second = DaemonProcess(town).wait_ready()
    try:
        with second.client() as client:
            _wait_until_indexed(client, second)
            assert client.status().eventlog.lines == snapshot_lines + LINES
            assert second.proc.poll() is None, second.log()
    finally:
        assert second.terminate() == 0, second.log()
