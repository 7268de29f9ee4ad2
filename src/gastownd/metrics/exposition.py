"""A :class:`~gastownd.metrics.collector.Snapshot` as metric families and text, by
``prometheus_client`` (``render``): off the event loop, in the HTTP thread or a worker thread.

Imported at the first scrape, not at start: ``prometheus_client`` brings the
stdlib's HTTP, e-mail and URL modules, which no other part needs. Names follow
Prometheus' conventions (units in the name, ``_total`` on counters); every
label takes a bounded set of values.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping

from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.openmetrics import exposition as openmetrics
from prometheus_client.registry import Collector

from gastown_client.protocol import FederationInfo
from gastownd.metrics.buckets import BucketsView
from gastownd.metrics.collector import Snapshot

# Beyond this many nodes, the rest share the label node="other".
MAX_NODE_LABELS = 64
OPENMETRICS = openmetrics.CONTENT_TYPE_LATEST
# ``core.records.Rejected`` reasons: a counter first seen at 1 would show no increase.
REJECT_REASONS = (
    "bad_attribution",
    "bad_digest",
    "bad_event",
    "bad_id",
    "bad_line",
    "bad_session",
    "bad_subject",
    "claims_this_node",
    "kind_mismatch",
    "malformed",
    "node_mismatch",
    "other_town",
    "too_large",
)


# ---------------------------------------------------------------- families


def _counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, value=value)


def _gauge(name: str, doc: str, value: float, unit: str = "") -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value, unit=unit)


def _labelled(
    family: CounterMetricFamily | GaugeMetricFamily, values: Mapping[str, float]
) -> CounterMetricFamily | GaugeMetricFamily:
    for label, value in sorted(values.items()):
        family.add_metric([label], value)
    return family


def _histogram(name: str, doc: str, view: BucketsView, unit: str = "") -> HistogramMetricFamily:
    return HistogramMetricFamily(
        name, doc, buckets=view.cumulative(), sum_value=view.total, unit=unit
    )


def families(s: Snapshot) -> Iterator[Metric]:
    """The daemon's metric families, from one snapshot."""
    yield InfoMetricFamily("gastownd_build", "The running gastownd.", value={"version": s.version})
    yield _gauge(
        "gastownd_start_time_seconds",
        "When the daemon started, in seconds since the epoch.",
        s.started_at,
        unit="seconds",
    )
    yield from _eventlog_families(s)
    yield from _client_families(s)
    yield from _session_families(s)
    if s.federation is not None and s.federation.enabled:
        yield from _federation_families(s.federation, s.federation_lag)


def _eventlog_families(s: Snapshot) -> Iterator[Metric]:
    emit = s.requests.get("emit")
    errors = emit.errors if emit is not None else {}
    yield _counter(
        "gastownd_emits_total",
        "emit requests whose line was appended and made durable.",
        (emit.count - sum(errors.values())) if emit is not None else 0,
    )
    yield _labelled(
        CounterMetricFamily(
            "gastownd_emit_errors_total",
            "emit requests answered with an error, by error code.",
            labels=["reason"],
        ),
        errors,
    )
    info = s.eventlog
    if info is None:
        return
    if s.fsync_seconds is not None:
        yield _histogram(
            "gastownd_fsync_seconds",
            "fdatasync of the event log, per group commit.",
            s.fsync_seconds,
            unit="seconds",
        )
    if s.batch_lines is not None:
        yield _histogram(
            "gastownd_write_batch_lines", "Lines written per group commit.", s.batch_lines
        )
    yield _gauge("gastownd_log_lines", "Complete lines in the event log.", info.lines)
    yield _gauge("gastownd_log_bytes", "Size of the event log.", info.bytes, unit="bytes")
    yield _gauge(
        "gastownd_malformed_lines", "Lines of the log that are not events.", info.malformed
    )
    yield _gauge(
        "gastownd_index_lines",
        "Events the index answers queries from (log lines less malformed ones).",
        info.lines - info.malformed,
    )
    yield _counter(
        "gastownd_external_lines_total",
        "Lines appended by other writers (gt) and indexed since the start.",
        info.external,
    )
    yield _gauge(
        "gastownd_archive_bytes",
        "Size of the archive of pruned lines.",
        info.archive.bytes,
        unit="bytes",
    )
    if s.prune_seconds is not None:
        yield _histogram(
            "gastownd_prune_seconds",
            "Duration of each prune (periodic or requested, dry runs excluded).",
            s.prune_seconds,
            unit="seconds",
        )


def _client_families(s: Snapshot) -> Iterator[Metric]:
    yield _gauge("gastownd_connections", "Open client connections.", s.connections)
    yield _gauge("gastownd_subscribers", "Live subscriptions.", s.subscribers)
    yield _labelled(
        CounterMetricFamily("gastownd_requests_total", "Requests answered, by op.", labels=["op"]),
        {op: view.count for op, view in s.requests.items()},
    )
    request_errors = CounterMetricFamily(
        "gastownd_request_errors_total",
        "Requests answered with an error, by op and error code.",
        labels=["op", "code"],
    )
    seconds = HistogramMetricFamily(
        "gastownd_request_seconds",
        "From a request decoded to its reply queued, by op.",
        labels=["op"],
        unit="seconds",
    )
    for op, view in sorted(s.requests.items()):
        for code, count in sorted(view.errors.items()):
            request_errors.add_metric([op, code], count)
        seconds.add_metric([op], view.seconds.cumulative(), view.seconds.total)
    yield request_errors
    yield seconds
    yield _labelled(
        CounterMetricFamily(
            "gastownd_refused_total",
            "Connections and frames refused before reaching a handler, by reason.",
            labels=["reason"],
        ),
        s.refused,
    )


def _session_families(s: Snapshot) -> Iterator[Metric]:
    if s.sessions is not None:
        yield _labelled(
            GaugeMetricFamily(
                "gastownd_sessions",
                "Sessions known, by state (remote: other nodes' sessions).",
                labels=["state"],
            ),
            s.sessions,
        )
    yield _labelled(
        CounterMetricFamily(
            "gastownd_hook_calls", "Claude Code hook calls, by hook event.", labels=["event"]
        ),
        s.hook_calls,
    )
    yield _counter(
        "gastownd_hooks_spooled_total",
        "Hook calls that waited in the spool (the daemon was down), applied since the start.",
        s.hooks_spooled,
    )
    yield _counter(
        "gastownd_hooks_trimmed_total",
        "Hook calls that arrived trimmed to fit the frame limit.",
        s.hooks_trimmed,
    )
    yield _labelled(
        CounterMetricFamily(
            "gastownd_attributions_total",
            "Attributions recorded (hooks and the attribute op), by action.",
            labels=["action"],
        ),
        s.attributions,
    )
    yield _counter("gastownd_digests_total", "Session digests saved since the start.", s.digests)


def _federation_families(info: FederationInfo, lag: BucketsView | None) -> Iterator[Metric]:
    yield _gauge(
        "gastownd_federation_connected",
        "1 while connected to the NATS servers, else 0.",
        1 if info.connected else 0,
    )
    yield _labelled(
        GaugeMetricFamily(
            "gastownd_federation_backlog",
            "Local records not yet acknowledged by the town's stream, by kind.",
            labels=["kind"],
        ),
        info.backlog,
    )
    if lag is not None:
        yield _histogram(
            "gastownd_federation_lag_seconds",
            "From a remote record stored in the town's stream to applied here.",
            lag,
            unit="seconds",
        )
    yield _counter(
        "gastownd_federation_published_total",
        "Local records acknowledged by the town's stream since the start.",
        info.published,
    )
    yield _labelled(
        CounterMetricFamily(
            "gastownd_federation_rejected_total",
            "Remote records refused, by reason.",
            labels=["reason"],
        ),
        {**dict.fromkeys(REJECT_REASONS, 0), **info.rejected},
    )
    applied = CounterMetricFamily(
        "gastownd_federation_applied_total",
        "Remote records applied here, by kind and origin node (kept across restarts).",
        labels=["kind", "node"],
    )
    other: dict[str, int] = {}
    for number, node in enumerate(sorted(info.nodes, key=lambda n: n.node)):
        counts = {
            "events": node.events,
            "sessions": node.sessions,
            "digests": node.digests,
            "attributions": node.attributions,
        }
        for kind, count in counts.items():
            if number < MAX_NODE_LABELS:
                applied.add_metric([kind, node.node], count)
            else:
                other[kind] = other.get(kind, 0) + count
    for kind, count in other.items():
        applied.add_metric([kind, "other"], count)
    yield applied


# ---------------------------------------------------------------- text


class _Process(Collector):
    """The standard process, platform and garbage collector families."""

    def __init__(self) -> None:
        self._registry = CollectorRegistry()
        ProcessCollector(registry=self._registry)
        PlatformCollector(registry=self._registry)
        GCCollector(registry=self._registry)

    def collect(self) -> Iterable[Metric]:
        return self._registry.collect()


_PROCESS = _Process()


class SnapshotCollector(Collector):
    """One scrape: the daemon's families from ``snapshot``, then the process ones."""

    def __init__(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot

    def collect(self) -> Iterable[Metric]:
        yield from families(self.snapshot)
        yield from _PROCESS.collect()


def render(snapshot: Snapshot, accept: str | None = None) -> tuple[bytes, str]:
    """The text and its content type: OpenMetrics unless ``accept`` asks for another format."""
    collector = SnapshotCollector(snapshot)
    if accept is None:
        text: bytes = openmetrics.generate_latest(collector)  # type: ignore[no-untyped-call]
        return text, OPENMETRICS
    encode, content_type = choose_encoder(accept)
    return encode(collector), content_type
