"""Metrics without a daemon: bucket arrays, listen addresses, the text a snapshot renders."""

from __future__ import annotations

import math

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client.openmetrics.parser import text_string_to_metric_families

from gastown_client.protocol import ArchiveInfo, EventLogInfo, FederationInfo, NodeInfo
from gastownd.metrics.address import TcpAddress, UnixAddress, check_listen, parse_listen
from gastownd.metrics.buckets import (
    FSYNC_SECONDS,
    Buckets,
    RequestMeter,
    hook_event_label,
    stream_stored_at,
)
from gastownd.metrics.collector import OpView, Snapshot
from gastownd.metrics.exposition import MAX_NODE_LABELS, OPENMETRICS, render
from gastownd.process.config import Config, MetricsConfig
from gastownd.process.refusals import BadRequestError

# ---------------------------------------------------------------- buckets


def test_a_value_on_a_bound_falls_in_that_bucket() -> None:
    buckets = Buckets((1.0, 2.0))
    for value in (0.5, 1.0, 1.5, 2.0, 3.0):
        buckets.observe(value)
    assert buckets.counts == [2, 2, 1]
    assert buckets.view().cumulative() == [("1.0", 2), ("2.0", 4), ("+Inf", 5)]
    assert buckets.view().count == 5 and buckets.total == 8.0


@given(st.lists(st.floats(min_value=0, max_value=1e6, allow_nan=False), max_size=200))
def test_cumulative_buckets_never_decrease_and_end_at_the_count(values: list[float]) -> None:
    buckets = Buckets(FSYNC_SECONDS)
    for value in values:
        buckets.observe(value)
    pairs = buckets.view().cumulative()
    counts = [count for _, count in pairs]
    assert counts == sorted(counts) and counts[-1] == len(values)
    assert pairs[-1][0] == "+Inf"
    for (bound, count), _ in zip(pairs[:-1], FSYNC_SECONDS, strict=True):
        assert count == sum(1 for v in values if v <= float(bound))
    assert math.isclose(buckets.total, sum(values), rel_tol=1e-9, abs_tol=1e-9)


def test_request_meter_counts_ops_errors_and_latency() -> None:
    meter = RequestMeter()
    meter.finished(int, 0.0, "ok")
    meter.finished(int, 0.0, BadRequestError("no"))
    stats = meter.ops[int]
    assert stats.count == 2 and dict(stats.errors) == {"bad_request": 1}
    assert stats.seconds.view().count == 2


def test_hook_event_labels_are_bounded() -> None:
    assert hook_event_label("SessionStart") == "SessionStart"
    assert hook_event_label("x" * 10_000) == "other"
    assert hook_event_label("\udcff") == "other"


def test_a_message_without_stream_metadata_is_not_measured() -> None:
    assert stream_stored_at(object()) is None


# ---------------------------------------------------------------- addresses


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:9464", TcpAddress("127.0.0.1", 9464, ipv6=False)),
        ("127.8.9.10:0", TcpAddress("127.8.9.10", 0, ipv6=False)),
        ("localhost:9464", TcpAddress("127.0.0.1", 9464, ipv6=False)),
        ("[::1]:9464", TcpAddress("::1", 9464, ipv6=True)),
        (
            "unix:/run/user/1000/gastownd-metrics.sock",
            UnixAddress("/run/user/1000/gastownd-metrics.sock"),
        ),
    ],
)
def test_loopback_addresses_are_accepted(text: str, expected: object) -> None:
    assert check_listen(text, allow_remote=False) == expected


@pytest.mark.parametrize(
    "text", ["0.0.0.0:9464", "[::]:9464", "10.1.2.3:9464", "[2001:db8::1]:9464"]
)
def test_remote_addresses_need_allow_remote(text: str) -> None:
    with pytest.raises(ValueError, match="allow_remote"):
        check_listen(text, allow_remote=False)
    assert not check_listen(text, allow_remote=True).loopback


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("", "expected HOST:PORT"),
        ("9464", "expected HOST:PORT"),
        (":9464", "expected HOST:PORT"),
        ("127.0.0.1:", "port"),
        ("127.0.0.1:65536", "port"),
        ("127.0.0.1:-1", "port"),
        ("127.0.0.1:９４６４", "port"),  # fullwidth digits: str.isdigit says yes
        ("127.0.0.1:" + "9" * 5000, "port"),
        ("example.com:9464", "IP address"),
        ("::1:9464", "brackets"),
        ("[127.0.0.1]:9464", "brackets"),
        ("unix:", "absolute path"),
        ("unix:metrics.sock", "absolute path"),
        ("unix:/tmp/a\0b", "absolute path"),
        ("unix:/" + "a" * 200, "longer than 100 bytes"),
        ("unix:/tmp/\udcff", "not valid UTF-8"),
    ],
)
def test_bad_addresses_say_what_is_wrong(text: str, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        parse_listen(text)


def test_metrics_are_off_by_default_and_a_remote_listen_is_a_config_error() -> None:
    assert Config().metrics.listen is None
    assert msgspec.convert({"metrics": {"listen": "127.0.0.1:9464"}}, Config).metrics.listen
    with pytest.raises(msgspec.ValidationError, match=r"allow_remote.*\$\.metrics"):
        msgspec.convert({"metrics": {"listen": "0.0.0.0:9464"}}, Config)
    allowed = {"listen": "0.0.0.0:9464", "allow_remote": True}
    assert msgspec.convert(allowed, MetricsConfig).allow_remote
    with pytest.raises(msgspec.ValidationError, match="unknown field"):
        msgspec.convert({"metrics": {"port": 9464}}, Config)


# ---------------------------------------------------------------- rendering


def _families(text: bytes) -> dict[str, object]:
    return {f.name: f for f in text_string_to_metric_families(text.decode())}


def _samples(text: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text.decode())
        for s in family.samples
    }


def test_an_empty_snapshot_renders_valid_openmetrics() -> None:
    text, content_type = render(Snapshot(version="9.9.9", started_at=1.5))
    assert content_type == OPENMETRICS and text.endswith(b"# EOF\n")
    found = _samples(text)
    assert found[("gastownd_build_info", (("version", "9.9.9"),))] == 1
    assert found[("gastownd_start_time_seconds", ())] == 1.5
    assert found[("gastownd_emits_total", ())] == 0
    assert not any(name.startswith("gastownd_federation") for name, _ in found)


def test_a_full_snapshot_renders_every_family_with_bounded_labels() -> None:
    seconds = Buckets((0.001, 0.01))
    seconds.observe(0.005)
    view = seconds.view()
    nodes = [
        NodeInfo(
            node=f"n{i:03}", last_record_at="", events=i, sessions=1, digests=0, attributions=0
        )
        for i in range(MAX_NODE_LABELS + 6)
    ]
    snapshot = Snapshot(
        version="1",
        started_at=0,
        connections=2,
        requests={
            "emit": OpView(5, {"too_large": 1}, view),
            "ping": OpView(3, {}, view),
        },
        refused={"bad_request": 2},
        subscribers=1,
        eventlog=EventLogInfo(
            lines=10, malformed=1, bytes=999, external=4, archive=ArchiveInfo(bytes=77)
        ),
        fsync_seconds=view,
        batch_lines=view,
        prune_seconds=view,
        sessions={"open": 1, "squashed": 2, "abandoned": 0, "logged": 3, "remote": 4},
        hook_calls={"Stop": 2, "other": 1},
        hooks_spooled=1,
        hooks_trimmed=1,
        attributions={"closed": 2},
        digests=2,
        federation=FederationInfo(
            enabled=True,
            connected=True,
            backlog={"events": 3, "sessions": 0},
            rejected={"bad_digest": 1},
            published=9,
            nodes=nodes,
        ),
        federation_lag=view,
    )
    text, _ = render(snapshot)
    found = _samples(text)
    assert found[("gastownd_emits_total", ())] == 4  # five answered, one of them an error
    assert found[("gastownd_emit_errors_total", (("reason", "too_large"),))] == 1
    assert found[("gastownd_request_errors_total", (("code", "too_large"), ("op", "emit")))] == 1
    assert found[("gastownd_request_seconds_bucket", (("le", "0.01"), ("op", "ping")))] == 1
    assert found[("gastownd_index_lines", ())] == 9
    assert found[("gastownd_log_bytes", ())] == 999
    assert found[("gastownd_archive_bytes", ())] == 77
    assert found[("gastownd_sessions", (("state", "remote"),))] == 4
    assert found[("gastownd_hook_calls_total", (("event", "other"),))] == 1
    assert found[("gastownd_federation_connected", ())] == 1
    assert found[("gastownd_federation_backlog", (("kind", "events"),))] == 3
    assert found[("gastownd_federation_lag_seconds_count", ())] == 1
    assert found[("gastownd_federation_rejected_total", (("reason", "bad_digest"),))] == 1
    applied_nodes = {
        dict(labels)["node"]
        for name, labels in found
        if name == "gastownd_federation_applied_total"
    }
    assert len(applied_nodes) == MAX_NODE_LABELS + 1 and "other" in applied_nodes
    other_events = sum(range(MAX_NODE_LABELS, MAX_NODE_LABELS + 6))
    assert (
        found[("gastownd_federation_applied_total", (("kind", "events"), ("node", "other")))]
        == other_events
    )
    # The classic text format, for whoever asks for it.
    classic, content_type = render(snapshot, "text/plain")
    assert content_type.startswith("text/plain") and b"gastownd_emits_total 4.0" in classic


def test_every_rejection_reason_is_reported_from_zero() -> None:
    """A reason missing from REJECT_REASONS would appear at 1, which ``increase`` misses."""
    import re
    from pathlib import Path

    import gastownd
    from gastownd.metrics.exposition import REJECT_REASONS

    source = Path(gastownd.__file__).parent
    raised = {
        reason
        for path in source.rglob("*.py")
        for reason in re.findall(r'Rejected\(\s*"([a-z_]+)"', path.read_text())
    }
    assert raised and raised <= set(REJECT_REASONS)
    text, _ = render(Snapshot(version="1", started_at=0, federation=FederationInfo(enabled=True)))
    assert _samples(text)[("gastownd_federation_rejected_total", (("reason", "malformed"),))] == 0
