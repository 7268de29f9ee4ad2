"""A line's ts outside years 1..9999 UTC, or with a field out of range, is malformed:
kept in the file, counted, and never a stored time that later fails a request."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from gastown_client.errors import RequestRejected
from gastown_client.protocol import Query
from tests.conftest import DaemonProcess
from tests.integration.test_eventlog import gt_append
from tests.integration.test_prune import configure

HOSTILE_TS = ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00", "2026-01-45T99:99:99Z"]


def test_a_ts_out_of_range_makes_the_line_malformed_and_the_sessions_stay_usable(
    town: Path,
) -> None:
    configure(town)
    proc = DaemonProcess(town).wait_ready()
    try:
        for i, ts in enumerate(HOSTILE_TS):
            gt_append(
                town,
                {
                    "ts": ts,
                    "source": "gt",
                    "type": "session_start",
                    "actor": "gastown/crew/joe",
                    "payload": {"role": "gastown/crew/joe", "session_id": f"hostile-{i}"},
                    "visibility": "feed",
                },
            )
        with proc.client() as client:
            deadline = time.monotonic() + 10
            while client.status().eventlog.malformed < len(HOSTILE_TS):
                assert time.monotonic() < deadline, client.status().eventlog
                time.sleep(0.05)
            client.sessions()  # answered, where a year-0 started_at failed it as internal
            with pytest.raises(RequestRejected) as rejected:
                client.resolve_session("hostile-0")
            assert rejected.value.code == "not_found"
        assert (town / ".events.jsonl").read_bytes().count(b"hostile-") == len(HOSTILE_TS)
    finally:
        assert proc.terminate() == 0


@pytest.mark.parametrize("bound", ["since", "until"])
def test_a_query_bound_outside_years_1_to_9999_is_a_bad_request(
    daemon_proc: DaemonProcess, bound: str
) -> None:
    with daemon_proc.client() as client:
        for ts in HOSTILE_TS:
            with pytest.raises(RequestRejected) as rejected:
                client.call(Query(archive=True, **{bound: ts}))
            assert rejected.value.code == "bad_request"
            assert "years 1..9999" in rejected.value.message
