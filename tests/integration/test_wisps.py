"""Session wisps through the socket and the CLI: ops, ends, restarts, attribution, seance."""

from __future__ import annotations

import json
import os
import sqlite3
import time
from pathlib import Path

import anyio
import pytest

from gastown_client.errors import RequestRejected
from tests.conftest import DaemonProcess, InProcess, run_ctl
from tests.integration.test_eventlog import gt_append, log_lines

JOE = "gastown/crew/joe"
NUX = "gastown/polecats/nux"


def sid(n: int) -> str:
    return f"{n:08d}-3caa-4bbb-8ccc-123456789abc"


def events_of_type(town: Path, type_: str) -> list[dict]:
    return [line for line in log_lines(town) if line["type"] == type_]


def test_session_lifecycle_through_the_cli(daemon_proc: DaemonProcess, town: Path) -> None:
    started = run_ctl(
        town,
        "session",
        "start",
        "--session",
        sid(1),
        "--actor",
        JOE,
        "--cwd",
        "/home/u/gt/gastown/crew/joe",
        "--topic",
        "fix the build",
        "--json",
    )
    assert started.returncode == 0, started.stderr
    assert json.loads(started.stdout)["wisp"]["state"] == "open"
    again = run_ctl(town, "session", "start", "--session", sid(1), "--actor", JOE, "--json")
    assert json.loads(again.stdout)["created"] is False
    for kind, ref in (("commit", "abc1234"), ("issue_closed", "gt-42"), ("note", None)):
        args = ["session", "step", "--session", sid(1)[:8], "--kind", kind]
        if ref:
            args += ["--ref", ref]
        if kind == "commit":
            args += ["--payload", '{"subject": "Fix the build"}']
        assert run_ctl(town, *args).returncode == 0
    wisp = json.loads(run_ctl(town, "wisp", sid(1)[:6], "--json").stdout)
    assert [s["kind"] for s in wisp["steps"]] == ["commit", "issue_closed", "note"]
    ended = run_ctl(town, "session", "end", "--session", sid(1), "--reason", "logout", "--json")
    digest = json.loads(ended.stdout)
    assert digest["counts"] == {"commit": 1, "issue_closed": 1, "note": 1}
    assert digest["step_count"] == 3
    assert digest["issues_closed"] == ["gt-42"]
    assert digest["commits"] == [{"sha": "abc1234", "subject": "Fix the build"}]
    assert digest["title"] == f"Digest: {sid(1)}"
    assert "### Steps" in digest["summary"]
    assert json.loads(run_ctl(town, "digest", digest["digest_id"][:8], "--json").stdout) == digest
    assert json.loads(run_ctl(town, "digest", sid(1), "--json").stdout) == digest
    human = run_ctl(town, "digest", sid(1))
    assert human.returncode == 0 and "Digest:" in human.stdout
    # Exactly one session_start and one session_end line; steps never reach the log.
    starts = events_of_type(town, "session_start")
    assert [s["payload"]["session_id"] for s in starts] == [sid(1)]
    assert starts[0]["payload"]["cwd"] == "/home/u/gt/gastown/crew/joe"
    assert starts[0]["payload"]["role"] == JOE
    [end] = events_of_type(town, "session_end")
    assert end["payload"] == {
        "digest_id": digest["digest_id"],
        "duration_s": round(digest["duration_s"]),
        "reason": "logout",
        "role": JOE,
        "session_id": sid(1),
        "steps": 3,
    }
    assert {line["type"] for line in log_lines(town)} == {"session_start", "session_end"}
    gone = run_ctl(town, "session", "step", "--session", sid(1), "--kind", "note")
    assert gone.returncode == 1 and "conflict" in gone.stderr


async def test_resume_reopens_as_a_new_segment(daemon: InProcess) -> None:
    async with daemon.client() as client:
        await client.session_start(sid(2), JOE)
        await client.session_end(sid(2), "other")
        resumed = await client.session_start(sid(2), JOE, source="resume")
        assert resumed.wisp.segment == 2 and resumed.wisp.state == "open"
        compacted = await client.session_start(sid(2), JOE, source="compact")
        assert [s.kind for s in compacted.wisp.steps] == ["compaction"]
        await client.session_start(sid(3), JOE)
        await client.session_end(sid(3))
        with pytest.raises(RequestRejected) as info:
            await client.session_start(sid(3), JOE, source="startup")
        assert info.value.code == "conflict"
        cv = await client.cv(JOE, verify=True)
        assert cv.total == 2 and cv.verified


async def test_prefix_resolution_and_ambiguity(daemon: InProcess) -> None:
    async with daemon.client() as client:
        for n in (11, 12, 13, 14):
            await client.session_start(f"ab{n}-session", JOE)
        row = await client.resolve_session("ab11")
        assert row.session_id == "ab11-session"
        assert (await client.resolve_session("ab12…")).session_id == "ab12-session"
        with pytest.raises(RequestRejected) as info:
            await client.resolve_session("ab1")
        assert info.value.code == "ambiguous"
        assert "ab11-session, ab12-session, ab13-session" in info.value.message
        with pytest.raises(RequestRejected) as info:
            await client.wisp("zz")
        assert info.value.code == "not_found"


def test_sessions_listing_merges_wisps_and_gt_lines(daemon_proc: DaemonProcess, town: Path) -> None:
    with daemon_proc.client() as client:
        client.session_start(sid(20), NUX, topic="wisp topic")
        client.session_start(sid(21), JOE)
        client.session_end(sid(21), "logout")
    for _ in range(2):  # gt logs a session twice (compaction): still one row
        gt_append(
            town,
            {
                "ts": "2026-01-22T19:33:55Z",
                "source": "gt",
                "type": "session_start",
                "actor": "deacon",
                "payload": {
                    "session_id": sid(22),
                    "role": "deacon",
                    "actor_pid": "deacon-1",
                    "topic": "patrol",
                    "cwd": "/home/u/gt/deacon",
                },
                "visibility": "feed",
            },
        )
    with daemon_proc.client() as client:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            rows = client.sessions().sessions
            if len(rows) == 3:
                break
            time.sleep(0.02)
    listed = run_ctl(town, "sessions", "--json")
    rows = json.loads(listed.stdout)
    assert [r["session_id"] for r in rows] == [sid(21), sid(20), sid(22)]
    for key in (
        "session_id",
        "actor",
        "started_at",
        "last_activity",
        "state",
        "topic",
        "cwd",
        "end_reason",
        "digest_id",
        "summary",
    ):
        assert all(key in r for r in rows)
    by_id = {r["session_id"]: r for r in rows}
    assert by_id[sid(22)]["state"] == "logged" and by_id[sid(22)]["topic"] == "patrol"
    assert by_id[sid(21)]["digest_id"] and by_id[sid(21)]["end_reason"] == "logout"
    role = json.loads(run_ctl(town, "sessions", "--role", "POLECATS", "--json").stdout)
    assert [r["session_id"] for r in role] == [sid(20)]
    rig = json.loads(run_ctl(town, "sessions", "--rig", "gastown", "-n", "1", "--json").stdout)
    assert [r["session_id"] for r in rig] == [sid(21)]
    only_open = json.loads(run_ctl(town, "sessions", "--state", "open", "--json").stdout)
    assert [r["session_id"] for r in only_open] == [sid(20)]
    assert run_ctl(town, "sessions").stdout.count("\n") == 3


def test_kill_9_restores_every_open_wisp(town: Path) -> None:
    proc = DaemonProcess(town).wait_ready()
    with proc.client() as client:
        for n in range(30, 40):
            client.session_start(sid(n), f"gastown/polecats/p{n}")
            client.session_step(sid(n), "commit", ref=f"c{n}")
    proc.kill()
    proc = DaemonProcess(town).wait_ready()
    try:
        with proc.client() as client:
            for n in range(30, 40):
                wisp = client.wisp(sid(n))
                assert wisp.state == "open"
                assert [(s.kind, s.ref) for s in wisp.steps] == [("commit", f"c{n}")]
            digest = client.session_end(sid(35), "done")
            assert digest.counts == {"commit": 1}
        assert len(events_of_type(town, "session_start")) == 10
    finally:
        assert proc.terminate() == 0


async def test_idle_wisps_are_reaped_with_an_injected_clock(daemon: InProcess, town: Path) -> None:
    async with daemon.client() as client:
        await client.session_start(sid(40), JOE)
        await client.session_step(sid(40), "note")
        await client.session_start(sid(41), NUX)
    sessions = daemon.daemon.sessions
    assert sessions is not None
    real = time.time()
    daemon.daemon.state.clock = lambda: real + 3600
    assert await sessions.reap(idle_timeout_s=24 * 3600) == []
    daemon.daemon.state.clock = lambda: real + 25 * 3600
    assert sorted(await sessions.reap(idle_timeout_s=24 * 3600)) == [sid(40), sid(41)]
    async with daemon.client() as client:
        digest = await client.digest(sid(40))
        assert digest.state == "abandoned" and digest.end_reason == "idle_timeout"
        assert digest.counts == {"note": 1}
    ends = events_of_type(town, "session_end")
    assert {e["payload"]["reason"] for e in ends} == {"idle_timeout"}


async def test_death_and_handoff_lines_from_gt_end_wisps(daemon: InProcess, town: Path) -> None:
    async with daemon.client() as client:
        await client.session_start(sid(50), NUX, tmux_session="gt-nux")
        await client.session_start(sid(51), JOE)
        await client.session_start(sid(52), "mayor")
        gt_append(
            town,
            {
                "ts": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 1)),
                "source": "gt",
                "type": "session_death",
                "actor": "gastown/witness",
                "payload": {
                    "session": "gt-nux",
                    "agent": NUX,
                    "reason": "zombie",
                    "caller": "witness",
                },
                "visibility": "feed",
            },
        )
        gt_append(
            town,
            {
                "ts": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 1)),
                "source": "gt",
                "type": "handoff",
                "actor": JOE,
                "payload": {"to_session": True, "subject": "over to you"},
                "visibility": "feed",
            },
        )
        with anyio.fail_after(5):
            while True:
                states = {n: (await client.wisp(sid(n))).state for n in (50, 51, 52)}
                if states[50] != "open" and states[51] != "open":
                    break
                await anyio.sleep(0.02)
        assert (await client.digest(sid(50))).end_reason == "zombie"
        assert (await client.digest(sid(51))).end_reason == "handoff"
        assert states[52] == "open"


def test_attribution_rules_and_listing(daemon_proc: DaemonProcess, town: Path) -> None:
    with daemon_proc.client() as client:
        client.session_start(sid(60), JOE, tmux_session="gt-joe")
        by_actor = client.attribute("gt-1", env={"GT_ROLE": JOE})
        assert (by_actor.session_id, by_actor.rule) == (sid(60), "latest open wisp of the actor")
        by_tmux = client.attribute("gt-2", env={"GT_SESSION": "gt-joe"}, action="created")
        assert by_tmux.rule == "tmux session (GT_SESSION)"
        by_claude = client.attribute(
            "gt-1", env={"CLAUDE_CODE_SESSION_ID": sid(61)}, action="updated"
        )
        assert by_claude.rule == "CLAUDE_CODE_SESSION_ID"
        with pytest.raises(RequestRejected) as info:
            client.attribute("gt-3", env={})
        assert info.value.code == "not_found"
        assert [s.kind for s in client.wisp(sid(60)).steps] == ["issue_closed", "issue_created"]
        client.session_end(sid(60))
    runtime = town / "rig" / ".runtime"
    runtime.mkdir(parents=True)
    (runtime / "session_id").write_text(f"{sid(62)}\nmore\n")
    env_free = {
        k: v
        for k, v in os.environ.items()
        if k not in ("CLAUDE_CODE_SESSION_ID", "GT_ROLE", "BD_ACTOR", "GT_SESSION")
    }
    import subprocess
    import sys

    via_file = subprocess.run(
        [
            sys.executable,
            "-m",
            "gastown_client.cli",
            "--town-root",
            str(town),
            "attribute",
            "gt-9",
            "--json",
        ],
        cwd=town / "rig",
        env=env_free,
        capture_output=True,
        text=True,
    )
    assert json.loads(via_file.stdout)["rule"] == ".runtime/session_id"
    assert json.loads(via_file.stdout)["session_id"] == sid(62)
    listing = json.loads(run_ctl(town, "attribution", "gt-1", "--json").stdout)
    assert [(r["session_id"], r["action"]) for r in listing["records"]] == [
        (sid(60), "closed"),
        (sid(61), "updated"),
    ]
    assert listing["records"][0]["digest_id"]  # the session has since been squashed
    assert "closed" in run_ctl(town, "attribution", "gt-1").stdout


def test_tampered_digest_is_caught_by_verify(town: Path) -> None:
    proc = DaemonProcess(town).wait_ready()
    with proc.client() as client:
        for n in range(70, 73):
            client.session_start(sid(n), JOE)
            client.session_step(sid(n), "commit", ref=f"c{n}")
            client.session_end(sid(n))
        assert client.cv(JOE, verify=True).verified
    assert proc.terminate() == 0
    db = sqlite3.connect(town / ".gastownd" / "gastownd.db")
    body = db.execute("SELECT body FROM digests WHERE session_id = ?", (sid(71),)).fetchone()[0]
    db.execute(
        "UPDATE digests SET body = ? WHERE session_id = ?",
        (body.replace(b'"c71"', b'"forged"'), sid(71)),
    )
    db.commit()
    db.close()
    proc = DaemonProcess(town).wait_ready()
    try:
        result = run_ctl(town, "cv", JOE, "--verify")
        assert result.returncode == 1
        assert "BROKEN" in result.stderr
        assert json.loads(run_ctl(town, "cv", JOE, "--json").stdout)["total"] == 3
    finally:
        assert proc.terminate() == 0


def test_seance_prints_and_checks_the_resume_command(
    daemon_proc: DaemonProcess, town: Path, tmp_path: Path
) -> None:
    with daemon_proc.client() as client:
        client.session_start(sid(80), JOE, cwd=str(tmp_path))
    printed = run_ctl(town, "seance", sid(80)[:8], "--print-command", "-p", "what did you do?")
    assert printed.returncode == 0
    assert printed.stdout.strip() == (
        f"cd {tmp_path} && claude --fork-session --resume {sid(80)} -p 'what did you do?'"
    )
    import subprocess
    import sys

    env = dict(os.environ, PATH=str(tmp_path / "empty"), HOME=str(tmp_path))
    no_claude = subprocess.run(
        [sys.executable, "-m", "gastown_client.cli", "--town-root", str(town), "seance", sid(80)],
        capture_output=True,
        text=True,
        env=env,
    )
    assert no_claude.returncode == 1 and "not on PATH" in no_claude.stderr
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "claude"
    fake.write_text('#!/bin/sh\necho "claude $* in $(pwd) CLAUDECODE=${CLAUDECODE:-unset}"\n')
    fake.chmod(0o755)
    env = dict(os.environ, PATH=f"{bin_dir}:/usr/bin:/bin", HOME=str(tmp_path), CLAUDECODE="1")
    missing = subprocess.run(
        [sys.executable, "-m", "gastown_client.cli", "--town-root", str(town), "seance", sid(80)],
        capture_output=True,
        text=True,
        env=env,
    )
    assert missing.returncode == 1 and "no longer exists" in missing.stderr
    project = "".join(c if c.isalnum() else "-" for c in str(tmp_path))
    transcript = tmp_path / ".claude" / "projects" / project / f"{sid(80)}.jsonl"
    transcript.parent.mkdir(parents=True)
    transcript.write_text("{}\n")
    ran = subprocess.run(
        [
            sys.executable,
            "-m",
            "gastown_client.cli",
            "--town-root",
            str(town),
            "seance",
            sid(80)[:8],
        ],
        capture_output=True,
        text=True,
        env=env,
    )
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.strip() == (
        f"claude --fork-session --resume {sid(80)} in {tmp_path} CLAUDECODE=unset"
    )


def test_death_logged_while_the_daemon_was_down_ends_the_wisp_at_start(town: Path) -> None:
    proc = DaemonProcess(town).wait_ready()
    with proc.client() as client:
        client.session_start(sid(90), NUX, tmux_session="gt-nux")
        client.session_start(sid(91), JOE)
    assert proc.terminate() == 0
    gt_append(
        town,
        {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 1)),
            "source": "gt",
            "type": "session_death",
            "actor": "gastown/witness",
            "payload": {"session": "gt-nux", "agent": NUX, "reason": "crashed"},
            "visibility": "feed",
        },
    )
    proc = DaemonProcess(town).wait_ready()
    try:
        with proc.client() as client:
            assert client.wisp(sid(90)).state == "squashed"
            assert client.digest(sid(90)).end_reason == "crashed"
            assert client.wisp(sid(91)).state == "open"
    finally:
        assert proc.terminate() == 0


async def test_a_refused_log_line_waits_in_the_outbox_and_follows_later(
    daemon: InProcess, town: Path
) -> None:
    from gastownd.process.refusals import StorageError

    eventlog = daemon.daemon.eventlog
    assert eventlog is not None
    real_append = eventlog.append

    async def disk_full(line: bytes) -> int:
        raise StorageError("could not write the event log (disk full)")

    async with daemon.client() as client:
        await client.session_start(sid(95), JOE)
        eventlog.append = disk_full  # type: ignore[method-assign]
        digest = await client.session_end(sid(95), "logout")  # durable in the store
        assert (await client.wisp(sid(95))).state == "squashed"
        assert [e["type"] for e in log_lines(town)] == ["session_start"]
        eventlog.append = real_append  # type: ignore[method-assign]
        await client.session_start(sid(96), NUX)  # the next op flushes the outbox
    ends = events_of_type(town, "session_end")
    assert [e["payload"]["digest_id"] for e in ends] == [digest.digest_id]
    assert [e["type"] for e in log_lines(town)] == ["session_start", "session_end", "session_start"]


def test_listing_summary_says_what_the_session_did(daemon_proc: DaemonProcess) -> None:
    with daemon_proc.client() as client:
        client.session_start(sid(97), JOE)
        client.session_step(sid(97), "issue_closed", ref="gt-7")
        client.session_step(sid(97), "commit", ref="abc", payload={"subject": "s"})
        client.session_end(sid(97))
        [row] = client.sessions().sessions
    assert row.summary == "closed gt-7; 1 commit"


def test_seance_with_a_vanished_directory_explains(daemon_proc: DaemonProcess, town: Path) -> None:
    with daemon_proc.client() as client:
        client.session_start(sid(98), JOE, cwd="/nonexistent/dir")
    result = run_ctl(town, "seance", sid(98))
    assert result.returncode == 1
    assert "no longer exists" in result.stderr and "Traceback" not in result.stderr


def test_an_open_wisp_keeps_step_payloads_up_to_its_byte_budget(town: Path) -> None:
    """Past ``MAX_KEPT_PAYLOAD_BYTES`` (4 MiB) of payloads, a step keeps kind, time and ref,
    and its payload says how big it was: the same in memory, after a kill -9, and in the
    digest's counts."""
    budget = 4 << 20  # core.wisp.MAX_KEPT_PAYLOAD_BYTES
    pad = "y" * 500_000
    proc = DaemonProcess(town).wait_ready()
    with proc.client() as client:
        client.session_start(sid(60), "gastown/polecats/nux")
        for n in range(12):
            client.session_step(sid(60), "commit", ref=f"c{n}", payload={"subject": pad})
    proc.kill()
    proc = DaemonProcess(town).wait_ready()
    try:
        with proc.client() as client:
            steps = client.wisp(sid(60)).steps
            assert [s.ref for s in steps] == [f"c{n}" for n in range(12)]
            kept = [s for s in steps if s.payload == {"subject": pad}]
            size = len(json.dumps({"subject": pad}, separators=(",", ":")))
            assert len(kept) * size <= budget < (len(kept) + 1) * size
            assert [s.payload for s in steps[len(kept) :]] == [{"payload_not_kept_bytes": size}] * (
                12 - len(kept)
            )
            digest = client.session_end(sid(60), "done")
            assert digest.step_count == 12 and digest.counts == {"commit": 12}
    finally:
        assert proc.terminate() == 0


async def test_a_flood_of_client_reads_never_holds_up_a_session_change(daemon: InProcess) -> None:
    """Clients can pipeline thousands of reads (``cv``, ``sessions``, ``status``…) and the store
    has one thread: queued there in arrival order, they held every hook's session change
    behind them. Here 40 ``cv`` requests, each 20 ms in the store, are all waiting when a
    session starts: it must not wait for them (at most two go first)."""
    sessions = daemon.daemon.sessions
    store = sessions.store
    real_chain = store.chain
    reads_done = 0
    reads_started = anyio.Event()

    def slow_chain(*args: object) -> object:
        nonlocal reads_done
        reads_started.set()
        time.sleep(0.02)
        reads_done += 1
        return real_chain(*args)  # type: ignore[arg-type]

    store.chain = slow_chain  # type: ignore[method-assign]
    done_at_start: list[int] = []
    async with daemon.client() as client:
        await client.session_start(sid(40), JOE)
        await client.session_end(sid(40))

        async def read_cv() -> None:
            async with daemon.client() as reader:
                await reader.cv(JOE)

        async with anyio.create_task_group() as tasks:
            for _ in range(40):
                tasks.start_soon(read_cv)
            await reads_started.wait()
            await anyio.sleep(0.05)  # every cv is in by now, waiting for the store
            done_at_start.append(reads_done)
            await client.session_start(sid(41), JOE)
            done_at_start.append(reads_done)
        assert reads_done == 40
    # A session start is a few store calls; each waits for two reads at most.
    before, after = done_at_start
    assert before < 10 and after - before <= 8, done_at_start
