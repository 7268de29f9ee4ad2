"""What ``gastownctl`` prints of text any writer can put in the log: escape sequences
(OSC 52 clipboard writes, title changes, CSI through its C1 form), carriage returns, NULs,
bidi overrides, 1 MB strings. None of it may reach the terminal as a control character,
in the human listings or in ``--json`` (review of the clients' output)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.conftest import DaemonProcess, run_ctl

OSC52 = "\x1b]52;c;cm0gLXJmIH4=\x07"  # writes the clipboard
TITLE = "\x1b]0;owned\x1b\\"
HIDE = "\x1b[8m"
CSI_C1 = "\x9b2J"  # clear screen, CSI in its 8-bit form (U+009B)
BIDI = "\u202eevil\u202c"
HOSTILE = f"a{OSC52}b{TITLE}c{HIDE}d\r{CSI_C1}e\x00f{BIDI}g\x7fh"
SESSION = "6f1c2d3e-4a5b-4c6d-8e9f-0a1b2c3d4e5f"
OTHER = "7a2b3c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d"
# Every character a terminal acts on, but newline and tab (the output's own layout).
CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def gt_line(event_type: str, actor: str, payload: dict[str, object]) -> bytes:
    line = {"ts": "2026-12-01T10:00:00Z", "source": "gt", "type": event_type, "actor": actor}
    line |= {"payload": payload, "visibility": "feed"}
    # ensure_ascii=False: the C1 and bidi characters are raw UTF-8 in the file, as gt
    # writes them; the C0 ones are JSON escapes (a raw one would make the line malformed).
    return json.dumps(line, ensure_ascii=False).encode() + b"\n"


@pytest.fixture
def hostile_town(town: Path) -> Path:
    lines = [
        gt_line("sling", HOSTILE, {"bead": HOSTILE, HOSTILE: "key", "note": "x" * 1_000_000}),
        gt_line(f"t{HOSTILE}", "gastown/crew/joe", {"multi": "line one\nline two"}),
        gt_line(
            "session_start",
            f"gastown/{HOSTILE}",
            {"session_id": SESSION, "role": "x", "topic": HOSTILE, "cwd": f"/tmp/{HOSTILE}"},
        ),
    ]
    (town / ".events.jsonl").write_bytes(b"".join(lines))
    return town


@pytest.mark.parametrize(
    "argv",
    [
        ["events"],
        ["events", "--json"],
        ["sessions"],
        ["sessions", "--json"],
        ["seance", SESSION[:8], "--print-command"],
    ],
    ids=["events", "events-json", "sessions", "sessions-json", "seance"],
)
def test_no_log_text_reaches_the_terminal_as_a_control_character(
    hostile_town: Path, argv: list[str]
) -> None:
    proc = DaemonProcess(hostile_town).wait_ready()
    try:
        done = run_ctl(hostile_town, *argv)
    finally:
        assert proc.terminate() == 0, proc.log()
    assert done.returncode in (0, 1), done.stderr
    for stream in (done.stdout, done.stderr):
        assert not CONTROL.findall(stream), CONTROL.findall(stream)[:5]
    assert "\\u001b]52;c;" in done.stdout  # shown, as its escape
    if "--json" in argv:
        for row in done.stdout.splitlines():
            json.loads(row)  # still JSON, the same values


def test_human_listings_keep_one_event_or_session_a_row(hostile_town: Path) -> None:
    line = {"ts": "2026-12-01T11:00:00Z", "source": "gt", "type": "session_start"}
    line |= {"actor": "y" * 100_000, "payload": {"session_id": OTHER}}
    with open(hostile_town / ".events.jsonl", "ab") as log:
        log.write(json.dumps(line).encode() + b"\n")
    proc = DaemonProcess(hostile_town).wait_ready()
    try:
        events = run_ctl(hostile_town, "events")
        sessions = run_ctl(hostile_town, "sessions")
    finally:
        assert proc.terminate() == 0, proc.log()
    assert events.returncode == 0, events.stderr
    rows = events.stdout.splitlines()
    assert len(rows) == 4, rows[:5]
    assert max(len(row) for row in rows) < 2000  # the 1 MB value and 100 KB actor are cut
    assert sessions.returncode == 0, sessions.stderr
    rows = sessions.stdout.splitlines()
    assert len(rows) == 2, rows[:5]
    assert max(len(row) for row in rows) < 2000  # the 100 KB actor is cut


def test_json_output_holds_the_same_values(hostile_town: Path) -> None:
    proc = DaemonProcess(hostile_town).wait_ready()
    try:
        done = run_ctl(hostile_town, "events", "--json", "--oldest-first")
    finally:
        assert proc.terminate() == 0, proc.log()
    stored = (hostile_town / ".events.jsonl").read_bytes().splitlines()
    assert [json.loads(row) for row in done.stdout.splitlines()] == [json.loads(s) for s in stored]
