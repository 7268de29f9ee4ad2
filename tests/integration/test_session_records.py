"""Sessions outlive the log: every session the town has seen stays listed and resolvable
after retention removed its ``session_start`` lines, across restarts and kill -9."""

from __future__ import annotations

import json
import shutil
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gastown_client.client import Client
from tests.conftest import SAMPLE_LOG, DaemonProcess, run_ctl
from tests.integration.test_eventlog import gt_append
from tests.integration.test_hooks import bash, payload, run_hook, wait_until

# session_start lines expire after a second; everything else is kept.
CONFIG = """\
[retention]
prune_interval = "1h"
default_ttl = "3650d"

[retention.ttls]
session_start = "1s"
"""
OLD = "2026-01-10T08:00:00Z"
GT_SESSIONS = [
    ("1b9dbb03-189a-445c-8d19-89ce03a5a1b0", "deacon"),
    ("3fba30dd-1f4c-4e27-8058-18e9d45a496f", "careops/crew/klip"),
    ("5a1e0c44-aaaa-4bbb-8ccc-000000000003", "gastown/polecats/nux"),
    ("5a1e0c44-bbbb-4bbb-8ccc-000000000004", "gastown/polecats/rust"),
]
LIVE_GT_SESSIONS = [
    ("9c0ffee0-cccc-4bbb-8ccc-000000000005", "gastown/witness"),
    ("9c0ffee0-dddd-4bbb-8ccc-000000000006", "mayor"),
]
HOOK_SESSIONS = [
    ("d00dfeed-eeee-4bbb-8ccc-000000000007", "gastown/crew/joe"),
    ("d00dfeed-ffff-4bbb-8ccc-000000000008", "gastown/crew/max"),
]


def start_line(session_id: str, actor: str, ts: str, pid: int) -> dict[str, Any]:
    return {
        "ts": ts,
        "source": "gt",
        "type": "session_start",
        "actor": actor,
        "payload": {
            "actor_pid": f"{actor}-{pid}",
            "cwd": f"/home/u/gt/{actor}",
            "role": actor,
            "session_id": session_id,
            "topic": f"work of {actor}",
        },
        "visibility": "feed",
    }


def now_ts() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def listed(client: Client) -> dict[str, Any]:
    rows = client.sessions(limit=1000).sessions
    ids = [row.session_id for row in rows]
    assert len(ids) == len(set(ids)), "a session is listed twice"
    return {row.session_id: row for row in rows}


def assert_all_known(proc: DaemonProcess, town: Path, expected: dict[str, int]) -> None:
    """Every session listed once, with its start count, and resolvable by prefix."""
    with proc.client() as client:
        rows = listed(client)
        assert set(rows) == set(expected), f"recall {len(set(rows) & set(expected))}/8"
        for session_id, starts in expected.items():
            assert rows[session_id].starts == starts, (session_id, rows[session_id])
            assert client.resolve_session(session_id[:13]).session_id == session_id
        assert client.query(types=["session_start"]).events == []
        assert client.status().sessions.known == len(expected)
    shown = run_ctl(town, "seance", HOOK_SESSIONS[0][0][:13], "--print-command")
    assert shown.returncode == 0 and HOOK_SESSIONS[0][0] in shown.stdout, shown.stderr


def test_sessions_outlive_the_log_across_prunes_restarts_and_kill9(town: Path) -> None:
    (town / "settings" / "gastownd.toml").write_text(CONFIG)
    # gt logged these while no daemon ran: two of them started twice (resume, compaction).
    for n, (session_id, actor) in enumerate(GT_SESSIONS):
        gt_append(town, start_line(session_id, actor, OLD, 100 + n))
    for session_id, actor in GT_SESSIONS[:2]:
        gt_append(town, start_line(session_id, actor, "2026-01-10T09:00:00Z", 900))
    proc = DaemonProcess(town).wait_ready()
    try:
        # The start-up prune removes every one of those lines, after recording them.
        with proc.client() as client:
            wait_until(lambda: client.query(types=["session_start"]).events == [])
        for n, (session_id, actor) in enumerate(LIVE_GT_SESSIONS):
            gt_append(town, start_line(session_id, actor, now_ts(), 200 + n))
        for session_id, actor in HOOK_SESSIONS:
            env = {"GT_ROLE": actor, "GT_SESSION": f"gt-{actor.rsplit('/', 1)[-1]}"}
            for source in ("startup", "compact", "resume"):
                call = payload("SessionStart", session_id, source=source)
                assert run_hook(town, call, env_extra=env).returncode == 0
            run_hook(town, payload("PreCompact", session_id, trigger="auto"), env_extra=env)
        gt_append(
            town,
            {
                "ts": now_ts(),
                "source": "gt",
                "type": "session_death",
                "actor": "gastown/witness",
                "payload": {"agent": "gastown/witness", "reason": "patrol done"},
                "visibility": "feed",
            },
        )
        expected = {sid: 2 for sid, _ in GT_SESSIONS[:2]}
        expected |= {sid: 1 for sid, _ in GT_SESSIONS[2:] + LIVE_GT_SESSIONS}
        expected |= {sid: 3 for sid, _ in HOOK_SESSIONS}
        with proc.client() as client:
            wait_until(lambda: len(listed(client)) == len(expected))
            time.sleep(1.1)  # let the live session_start lines expire too
            assert client.prune().pruned.get("session_start", 0) >= 4
            rows = listed(client)
            witness = rows[LIVE_GT_SESSIONS[0][0]]
            assert (witness.state, witness.end_reason) == ("logged", "patrol done")
            assert rows[HOOK_SESSIONS[0][0]].state == "open"
            assert rows[GT_SESSIONS[1][0]].topic == "work of careops/crew/klip"
        assert_all_known(proc, town, expected)
    finally:
        assert proc.terminate() == 0, proc.log()
    proc = DaemonProcess(town).wait_ready()
    assert_all_known(proc, town, expected)
    proc.kill()
    proc = DaemonProcess(town).wait_ready()
    try:
        assert_all_known(proc, town, expected)
    finally:
        assert proc.terminate() == 0, proc.log()


def test_the_sample_log_lists_its_53_sessions_once_each(town: Path) -> None:
    shutil.copy(SAMPLE_LOG, town / ".events.jsonl")
    before = (town / ".events.jsonl").read_bytes()
    proc = DaemonProcess(town).wait_ready()
    try:
        with proc.client() as client:
            rows = listed(client)
        starts = [json.loads(line) for line in before.splitlines()]
        ids = {e["payload"]["session_id"] for e in starts if e["type"] == "session_start"}
        assert set(rows) == ids and len(ids) == 53
        assert sum(row.starts for row in rows.values()) == 100
        assert all(row.state == "logged" for row in rows.values())
        # Deaths in the sample end the sessions of their agents.
        assert any(row.end_reason for row in rows.values())
    finally:
        assert proc.terminate() == 0, proc.log()
    assert (town / ".events.jsonl").read_bytes() == before


SCHEMA_V1 = Path(__file__).resolve().parents[1] / "data" / "schema-v1"


def test_a_schema_1_database_opens_and_its_wisps_become_session_records(town: Path) -> None:
    """The database of the first release (made by it: a squashed-then-resumed session
    and an open one) opens, migrates, and keeps its digests and attributions."""
    private = town / ".gastownd"
    private.mkdir(mode=0o700)
    shutil.copy(SCHEMA_V1 / "gastownd.db", private / "gastownd.db")
    shutil.copy(SCHEMA_V1 / "events.jsonl", town / ".events.jsonl")
    proc = DaemonProcess(town).wait_ready()
    try:
        with proc.client() as client:
            rows = wait_until(lambda: (r := listed(client)) and len(r) == 2 and r)
            joe = rows["aaaaaaaa-1111-4bbb-8ccc-000000000001"]
            assert (joe.state, joe.segments, joe.starts, joe.topic) == ("open", 2, 2, "schema one")
            nux = rows["bbbbbbbb-2222-4bbb-8ccc-000000000002"]
            assert (nux.state, nux.starts, nux.topic) == ("open", 1, "still open")
            [record] = client.attribution("gt-v1a").records
            assert record.digest_id is not None
            assert client.digest(record.digest_id).issues_closed == ["gt-v1a"]
            assert client.cv("gastown/crew/joe", verify=True).verified
    finally:
        assert proc.terminate() == 0, proc.log()


def test_a_session_row_counts_the_steps_of_every_segment(
    daemon_proc: DaemonProcess, town: Path
) -> None:
    hooked, logged = HOOK_SESSIONS[0][0], LIVE_GT_SESSIONS[0]
    calls = [
        payload("SessionStart", hooked, source="startup"),
        bash("bd close gt-1", session=hooked),
        payload("Stop", hooked),
        payload("SessionEnd", hooked, reason="logout"),  # segment 1: 2 steps
        payload("SessionStart", hooked, source="resume"),
        payload("Stop", hooked),  # segment 2, open: 1 step so far
    ]
    for call in calls:
        assert run_hook(town, call).returncode == 0
    gt_append(town, start_line(*logged, now_ts(), 41))
    with daemon_proc.client() as client:
        rows = wait_until(lambda: (found := listed(client)).get(logged[0]) and found)
        assert client.digest(hooked).step_count == 2
    assert (rows[hooked].state, rows[hooked].segments, rows[hooked].step_count) == ("open", 2, 3)
    assert rows[logged[0]].state == "logged" and rows[logged[0]].step_count is None
    run_hook(town, payload("SessionEnd", hooked, reason="logout"))
    with daemon_proc.client() as client:
        row = client.resolve_session(hooked)
    assert (row.state, row.step_count) == ("squashed", 3)
