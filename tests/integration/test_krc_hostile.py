"""A hostile ``<town>/.krc.yaml``: refused with a reason, never the daemon's end."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from gastown_client.errors import RequestRejected
from gastownd.core.retention import RetentionPolicy
from gastownd.eventlog.pruner import MAX_KRC_BYTES, KrcRefused, read_krc
from tests.conftest import DaemonProcess
from tests.integration.test_prune import configure

FALLBACK = RetentionPolicy()


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"[" * 2000 + b"]" * 2000, "deeper than"),
        (b'{"default_ttl": 1' + b"0" * 400 + b"}", "default_ttl must be a duration"),
        (b'{"ttls": {"mail": 1' + b"0" * 400 + b"}}", "ttls['mail'] must be a duration"),
        (b'{"prune_interval": 1e300}', "prune_interval must be a duration"),
        (b'{"prune_interval": 1e400}', "out of range"),
        (b'{"min_retain_count": 1' + b"0" * 400 + b"}", "min_retain_count must be"),
        (b" " * (MAX_KRC_BYTES + 1), "larger than"),
        (b"\xff\xfe", "krc"),
        (b"", "krc"),
    ],
)
def test_a_hostile_krc_file_is_refused_with_a_reason(
    tmp_path: Path, content: bytes, reason: str
) -> None:
    path = tmp_path / ".krc.yaml"
    path.write_bytes(content)
    with pytest.raises(KrcRefused) as refused:
        read_krc(path, FALLBACK)
    assert refused.value.event == "krc_invalid"
    if reason != "krc":
        assert reason in refused.value.reason


def test_a_fifo_or_dev_zero_as_krc_file_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo.krc"
    os.mkfifo(fifo)
    with pytest.raises(KrcRefused) as refused:
        read_krc(fifo, FALLBACK)  # would block for good on an open without O_NONBLOCK
    assert refused.value.event == "krc_unreadable"
    zero = tmp_path / "zero.krc"
    zero.symlink_to("/dev/zero")
    with pytest.raises(KrcRefused, match="larger than"):
        read_krc(zero, FALLBACK)


def test_an_absent_krc_file_is_the_fallback(tmp_path: Path) -> None:
    assert read_krc(tmp_path / ".krc.yaml", FALLBACK) is FALLBACK


@pytest.mark.parametrize(
    "content", [b"[" * 2000 + b"]" * 2000, b'{"default_ttl": 1' + b"0" * 400 + b"}"]
)
def test_the_daemon_survives_a_hostile_krc_file_and_the_prune_op_names_it(
    town: Path, content: bytes
) -> None:
    configure(town)
    # Enabled: the periodic prune at start reads the file too.
    (town / "settings" / "gastownd.toml").write_text("[retention]\nenabled = true\n")
    (town / ".krc.yaml").write_bytes(content)
    proc = DaemonProcess(town).wait_ready()
    try:
        with proc.client() as client:
            with pytest.raises(RequestRejected) as rejected:
                client.prune()
            assert rejected.value.code == "bad_request"
            assert str(town / ".krc.yaml") in rejected.value.message
            client.ping()
        events = [json.loads(x).get("event") for x in proc.log().splitlines() if x.startswith("{")]
        assert "krc_invalid" in events
        assert proc.proc.poll() is None
    finally:
        assert proc.terminate() == 0
