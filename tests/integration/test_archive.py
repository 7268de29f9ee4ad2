"""Retention moves lines to the archive, never away: archived first, searchable, replayed."""

from __future__ import annotations

import gzip
import itertools
import json
import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from gastown_client.client import Client
from gastown_client.errors import RequestRejected
from gastownd.core.index import EventIndex
from gastownd.core.retention import RetentionPolicy
from gastownd.eventlog.archive_files import Archive, days_of
from tests.conftest import DaemonProcess, run_ctl

NOW = datetime.now(UTC).replace(microsecond=0)
TYPES = ["nudge", "session_start", "sling", "mail", "mass_death", "patrol_started", "done"]
ACTORS = ["gastown/witness", "gastown/crew/joe", "mayor", "deacon"]


def sixty_days(count: int = 600) -> list[bytes]:
    """``count`` lines over the last 60 days, oldest first, types mixed.

    Every line is at least an hour away from a whole number of days old, so
    that which lines a prune removes does not depend on when it runs.
    """
    lines = []
    per_day = count // 60
    for i in range(count):
        day, rank = divmod(i, per_day)
        ts = NOW - timedelta(days=60 - day) + timedelta(hours=1, minutes=5 * rank)
        event = {
            "ts": ts.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "source": "gt",
            "type": TYPES[i * 5 % len(TYPES)],
            "actor": ACTORS[i % len(ACTORS)],
            "payload": {"i": i},
            "visibility": "feed",
        }
        lines.append(json.dumps(event, separators=(",", ":")).encode())
    return lines


def expired(line: bytes, now: datetime = NOW) -> bool:
    event = json.loads(line)
    ts = datetime.strptime(event["ts"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    return ts.timestamp() < now.timestamp() - RetentionPolicy().ttl_for(event["type"])


def make_town(town: Path, lines: list[bytes], retention: str = "enabled = false\n") -> None:
    (town / ".events.jsonl").write_bytes(b"".join(line + b"\n" for line in lines))
    (town / "settings" / "gastownd.toml").write_text("[retention]\n" + retention)


def archived_lines(town: Path) -> list[bytes]:
    found = []
    for path in sorted((town / ".gastownd" / "archive").glob("events-*.jsonl.gz")):
        found += gzip.decompress(path.read_bytes()).splitlines()
    return found


def wait_for_first_prune(proc: DaemonProcess, timeout_s: float = 20) -> None:
    deadline = time.monotonic() + timeout_s
    with proc.client() as client:
        while client.status().eventlog.last_prune_at is None:
            assert time.monotonic() < deadline, proc.log()
            time.sleep(0.05)


def log_events(proc: DaemonProcess) -> list[dict[str, Any]]:
    return [json.loads(line) for line in proc.log_path.read_text().splitlines() if line]


def epoch_of(client: Client) -> int:
    return int(client.query(limit=1).cursor.split(":")[0])


# ------------------------------------------------------------ archive by default


@pytest.mark.parametrize("crash_at", [None, "archive_written", "swapped"])
def test_first_start_on_a_60_day_log_archives_every_pruned_line_exactly_once(
    town: Path, crash_at: str | None
) -> None:
    lines = sixty_days()
    make_town(town, lines, "enabled = true\n")
    if crash_at is not None:
        # Killed by SIGKILL at that step of its first prune, then started again.
        crashed = DaemonProcess(town, env={**os.environ, "GASTOWND_TEST_CRASH_AT": crash_at})
        assert crashed.proc.wait(30) == -9, crashed.log()
        crashed._log.close()
        assert (town / ".gastownd" / "archive" / "pending.json").exists()
    proc = DaemonProcess(town).wait_ready()
    try:
        wait_for_first_prune(proc)
        with proc.client() as client:
            info = client.status().eventlog
    finally:
        assert proc.terminate() == 0
    removed = [line for line in lines if expired(line)]
    kept = [line for line in lines if not expired(line)]
    assert 300 < len(removed) < len(lines)
    archive = archived_lines(town)
    assert sorted(archive) == sorted(removed)  # each exactly once
    assert (town / ".events.jsonl").read_bytes().splitlines() == kept
    assert not (town / ".gastownd" / "archive" / "pending.json").exists()
    assert not list(town.glob(".events.jsonl.gastownd-prune-*"))
    days = {json.loads(line)["ts"][:10] for line in removed}
    assert info.archive.days == len(days)
    assert (info.archive.first_day, info.archive.last_day) == (min(days), max(days))
    assert info.archive.bytes > 0
    events = log_events(proc)
    names = [e["event"] for e in events]
    if crash_at == "archive_written":
        assert "archive_batch_rolled_back" in names
    elif crash_at == "swapped":
        assert "archive_batch_committed" in names
    announced = next(e for e in events if e["event"] == "eventlog_archiving")
    assert announced["lines"] == len(removed)
    assert announced["days"] == len(days)
    assert announced["bytes"] == sum(len(line) + 1 for line in removed)
    # Said before it was done (after a crash at the swap, the restart had nothing left).
    assert ("eventlog_pruned" in names) == (crash_at != "swapped")
    if crash_at != "swapped":
        assert names.index("eventlog_archiving") < names.index("eventlog_pruned")


@pytest.mark.parametrize("dies_at", ["planner", "archive_member"])
def test_a_prune_whose_worker_dies_changes_nothing_and_the_next_one_works(
    town: Path, dies_at: str
) -> None:
    """The plan and the archive batch are made in a worker process: killed before it
    answers, or in the middle of the batch, the prune fails, and the log and the archive
    are as they were."""
    lines = sixty_days()
    make_town(town, lines)
    before = (town / ".events.jsonl").read_bytes()
    proc = DaemonProcess(town, env={**os.environ, "GASTOWND_TEST_CRASH_AT": dies_at})
    proc.wait_ready()
    try:
        with proc.client() as client:
            with pytest.raises(RequestRejected) as refused:
                client.prune()
            assert "prune failed" in refused.value.message
            assert "the log is unchanged" in refused.value.message
            assert client.status().eventlog.lines == len(lines)
            assert len(client.query(limit=len(lines) + 1).events) == len(lines)
    finally:
        assert proc.terminate() == 0
    assert (town / ".events.jsonl").read_bytes() == before
    assert archived_lines(town) == []
    assert not (town / ".gastownd" / "archive" / "pending.json").exists()
    assert not list(town.glob(".events.jsonl.gastownd-prune-*"))

    proc = DaemonProcess(town).wait_ready()
    try:
        with proc.client() as client:
            result = client.prune()
    finally:
        assert proc.terminate() == 0
    removed = [line for line in lines if expired(line)]
    assert result.archived == result.pruned_total == len(removed)
    assert sorted(archived_lines(town)) == sorted(removed)
    assert (town / ".events.jsonl").read_bytes().splitlines() == [
        line for line in lines if not expired(line)
    ]


def test_with_archiving_off_a_prune_warns_first_and_an_older_cursor_resyncs(town: Path) -> None:
    lines = sixty_days(120)
    make_town(town, lines, "enabled = false\narchive = false\n")
    proc = DaemonProcess(town).wait_ready()
    try:
        with proc.client() as client:
            epoch = epoch_of(client)
            assert client.prune().archived == 0
        with proc.client() as client:
            subscription = client.subscribe(cursor=f"{epoch}:0")
            assert subscription.resync
    finally:
        assert proc.terminate() == 0
    assert archived_lines(town) == []
    warning = next(e for e in log_events(proc) if e["event"] == "eventlog_pruning_unarchived")
    assert warning["lines"] == sum(expired(line) for line in lines)


# ------------------------------------------------------------ searching the archive


def test_events_archive_finds_the_oldest_day_with_type_actor_and_time_filters(
    town: Path,
) -> None:
    lines = sixty_days()
    make_town(town, lines)
    proc = DaemonProcess(town).wait_ready()
    try:
        with proc.client() as client:
            client.prune()
        oldest_day = json.loads(lines[0])["ts"][:10]
        wanted = [
            line
            for line in lines
            if json.loads(line)["ts"].startswith(oldest_day)
            and json.loads(line)["type"] in ("nudge", "mail")
            and "crew" in json.loads(line)["actor"]
        ]
        assert wanted and all(expired(line) for line in wanted)
        filters = ["--type", "nudge", "--type", "mail", "--actor", "crew"]
        filters += ["--since", f"{oldest_day}T00:00:00Z", "--until", f"{oldest_day}T23:59:59Z"]
        found = run_ctl(town, "events", "--archive", "--oldest-first", "--json", *filters)
        assert found.returncode == 0, found.stderr
        assert found.stdout.encode().splitlines() == wanted
        newest_first = run_ctl(town, "events", "--archive", "--json", *filters)
        assert newest_first.stdout.encode().splitlines() == wanted[::-1]
        live_only = run_ctl(town, "events", "--json", *filters)
        assert live_only.stdout == ""
        with proc.client() as client:
            # The whole history, live and archived, in log order.
            everything = client.query(limit=100_000, archive=True, oldest_first=True).events
            assert [bytes(raw) for raw in everything] == lines
            newest = client.query(limit=7, archive=True).events
            assert [bytes(raw) for raw in newest] == lines[::-1][:7]
            mails = client.query(limit=5, archive=True, types=["mail"], oldest_first=True)
            assert [bytes(raw) for raw in mails.events] == [
                line for line in lines if json.loads(line)["type"] == "mail"
            ][:5]
    finally:
        assert proc.terminate() == 0


def test_archives_written_before_seqs_were_kept_are_still_searched(town: Path) -> None:
    make_town(town, [])
    folder = town / ".gastownd" / "archive"
    folder.mkdir(parents=True)
    old = sixty_days(60)[:3]
    (folder / f"events-{json.loads(old[0])['ts'][:10]}.jsonl.gz").write_bytes(
        gzip.compress(b"".join(line + b"\n" for line in old))
    )
    proc = DaemonProcess(town).wait_ready()
    try:
        with proc.client() as client:
            client.emit("sling", "mayor", {"bead": "gt-1"})
            found = client.query(limit=10, archive=True, oldest_first=True).events
        assert [bytes(raw) for raw in found[:3]] == old
        assert json.loads(bytes(found[3]))["type"] == "sling"
    finally:
        assert proc.terminate() == 0


# ------------------------------------------------------------ replaying the archive


def test_a_subscriber_resuming_from_a_pruned_cursor_gets_archived_then_live_lines(
    town: Path,
) -> None:
    lines = sixty_days()
    make_town(town, lines)
    proc = DaemonProcess(town).wait_ready()
    try:
        with proc.client() as client:
            epoch = epoch_of(client)
            result = client.prune()
            assert result.archived == result.pruned_total > 0
            client.emit("after_prune", "tester", {"n": 1})
        with proc.client() as client, proc.client() as emitter:
            subscription = client.subscribe(cursor=f"{epoch}:9")
            assert not subscription.resync
            emitter.emit("live", "tester", {"n": 2})
            received = []
            for cursor, raw in subscription:
                received.append((int(cursor.split(":")[1]), bytes(raw)))
                if json.loads(bytes(raw))["type"] == "live":
                    break
        seqs = [seq for seq, _ in received]
        assert seqs == list(range(10, len(lines) + 2))  # no gap, no duplicate
        assert [line for _, line in received[: len(lines) - 10]] == lines[10:]
        assert json.loads(received[-2][1])["type"] == "after_prune"
        expected = [
            x
            for x in lines[10:]
            if json.loads(x)["type"] == "mail" and "joe" in json.loads(x)["actor"]
        ]
        with proc.client() as client:
            # Filters apply to the replay too.
            subscription = client.subscribe(cursor=f"{epoch}:9", types=["mail"], actor="joe")
            mails = []
            for _, raw in subscription:
                mails.append(bytes(raw))
                if len(mails) == len(expected):
                    break
        assert mails == expected
    finally:
        assert proc.terminate() == 0


def test_a_prune_during_a_replay_leaves_no_gap_and_no_duplicate(town: Path) -> None:
    # Long lines, so that the replay stalls on a full socket while the prune runs.
    lines = [_padded(line) for line in sixty_days(3000)]
    make_town(town, lines)
    (town / ".krc.yaml").write_text(json.dumps({"ttls": {"mail": 59 * 86_400 * 10**9}}))
    proc = DaemonProcess(town, "--log-level", "debug").wait_ready()
    try:
        with proc.client() as client:
            epoch = epoch_of(client)
            client.prune()  # the first pass, mails older than 59 days
        with proc.client() as reader:
            subscription = reader.subscribe(cursor=f"{epoch}:0")
            time.sleep(0.5)  # the replay fills the socket and waits
            (town / ".krc.yaml").unlink()  # mails at 30 days: many more lines go
            with proc.client() as client:
                assert client.prune().archived > 0
            seqs = []
            for cursor, _raw in subscription:
                seqs.append(int(cursor.split(":")[1]))
                if seqs[-1] == len(lines) - 1:
                    break
        assert seqs == list(range(1, len(lines)))
    finally:
        assert proc.terminate() == 0
    assert "replay_reopened_archive" in proc.log_path.read_text()


def _padded(line: bytes) -> bytes:
    event = json.loads(line)
    event["payload"]["pad"] = "p" * 1500
    return json.dumps(event, separators=(",", ":")).encode()


# ------------------------------------------------------------ archive_max_age


def test_archive_max_age_deletes_old_days_and_cursors_into_them_resync(town: Path) -> None:
    lines = sixty_days()
    make_town(town, lines, 'enabled = false\narchive_max_age = "40d"\n')
    proc = DaemonProcess(town).wait_ready()
    try:
        with proc.client() as client:
            epoch = epoch_of(client)
            client.prune()
            info = client.status().eventlog.archive
        limit = (NOW - timedelta(days=40)).strftime("%Y-%m-%d")
        assert info.first_day is not None and info.first_day >= limit
        archive = archived_lines(town)
        assert archive and all(json.loads(x)["ts"][:10] >= limit for x in archive)
        with proc.client() as client:
            assert client.subscribe(cursor=f"{epoch}:0").resync
        last_gone = max(
            i for i, x in enumerate(lines) if expired(x) and json.loads(x)["ts"][:10] < limit
        )
        with proc.client() as client:
            subscription = client.subscribe(cursor=f"{epoch}:{last_gone}")
            assert not subscription.resync
            cursor, _ = next(iter(subscription))
            assert int(cursor.split(":")[1]) == last_gone + 1
    finally:
        assert proc.terminate() == 0


def _clock(offset_days: int) -> dict[str, str]:
    return {**os.environ, "GASTOWND_TEST_CLOCK_OFFSET_S": str(offset_days * 86_400)}


@pytest.mark.parametrize(
    ("writer_days", "pruner_days"),
    [(-2 * 365, 0), (0, 2 * 365)],
    ids=["lines-dated-by-a-clock-behind", "prune-with-a-clock-ahead"],
)
def test_a_clock_years_off_deletes_no_archived_day(
    town: Path, writer_days: int, pruner_days: int
) -> None:
    # The prune archives the lines (reversible) but deletes no archived day: the clock
    # and the lines disagree by 2 years, more than archive_max_age.
    make_town(town, [], 'enabled = false\narchive_max_age = "365d"\n')
    writer = DaemonProcess(town, env=_clock(writer_days)).wait_ready()
    try:
        with writer.client() as client:
            for i in range(5):
                client.emit("mail", "mayor", {"i": i})
    finally:
        assert writer.terminate() == 0
    proc = DaemonProcess(town, env=_clock(pruner_days)).wait_ready()
    try:
        with proc.client() as client:
            client.prune()
            assert len(client.query(archive=True, limit=100).events) == 5
        assert "prune_clock_suspect" in proc.log()
    finally:
        assert proc.terminate() == 0


def test_query_with_archive_on_an_empty_town_finds_nothing_and_checks_filters(town: Path) -> None:
    make_town(town, [])
    proc = DaemonProcess(town).wait_ready()
    try:
        with proc.client() as client:
            assert client.query(archive=True).events == []
            with pytest.raises(RequestRejected):
                client.query(archive=True, since="soon")
    finally:
        assert proc.terminate() == 0


# ------------------------------------------------------------ the archive's own files


def test_a_batch_is_undone_while_its_new_log_exists_and_stands_once_renamed(tmp_path: Path) -> None:
    lines = sixty_days(120)
    log = tmp_path / "events.jsonl"
    log.write_bytes(b"".join(line + b"\n" for line in lines))
    index = EventIndex()
    index.add_lines(log.read_bytes(), 0, itertools.count())
    archive = Archive(tmp_path / "archive")

    def files() -> dict[str, bytes]:
        return {p.name: p.read_bytes() for p in sorted(archive.folder.glob("events-*"))}

    def batch(positions: range, commit: Path) -> None:
        fd = os.open(log, os.O_RDONLY)
        try:
            archive.write(
                fd, index, positions, (len(index), index.end), days_of(index, positions), 7, commit
            )
        finally:
            os.close(fd)

    batch(range(0, 10), tmp_path / "gone")  # committed: its new log was renamed away
    archive.recover()
    before = files()
    pending = tmp_path / "events.jsonl.gastownd-prune-1"  # a prune names its new log so
    pending.write_bytes(b"")
    batch(range(10, 60), pending)
    assert files() != before
    archive.rollback()  # the swap failed
    assert files() == before
    batch(range(10, 60), pending)
    archive.recover()  # a crash before the rename
    assert files() == before and not (archive.folder / "pending.json").exists()
    batch(range(10, 60), pending)
    pending.unlink()  # the rename happened, then a crash
    archive.recover()
    members = archive.catalogue()
    found = [line for m in members for _, line in archive.read(m)]
    assert sorted(found) == sorted(lines[:60])
    assert sorted(seq for m in members for seq in m.seqs()) == list(range(60))
    assert {m.epoch for m in members} == {7}

    def day(i: int) -> str:
        return str(json.loads(lines[i])["ts"][:10])

    assert archive.expire(day(30)) == {7: max(i for i in range(60) if day(i) < day(30))}
    assert archive.days()[0] == day(30)


def test_after_a_prune_that_empties_the_log_seqs_go_on_and_survive_a_restart(town: Path) -> None:
    # Older than 30 days and no mass_death (90 days): every line expires.
    lines = [x for x in sixty_days(60)[:30] if b"mass_death" not in x]
    last = len(lines) - 1
    make_town(town, lines)
    proc = DaemonProcess(town).wait_ready()
    try:
        with proc.client() as client:
            epoch = epoch_of(client)
            assert client.prune().kept == 0
            assert client.query(limit=1).cursor == f"{epoch}:{last}"
            assert client.emit("done", "tester").cursor == f"{epoch}:{last + 1}"
            subscription = client.subscribe(cursor=f"{epoch}:{last - 2}")
            assert not subscription.resync
            seqs = [int(c.split(":")[1]) for c, _ in itertools.islice(subscription, 3)]
            assert seqs == [last - 1, last, last + 1]
    finally:
        assert proc.terminate() == 0
    proc = DaemonProcess(town).wait_ready()
    try:
        with proc.client() as client:
            assert client.emit("done", "tester").cursor == f"{epoch}:{last + 2}"
    finally:
        assert proc.terminate() == 0
