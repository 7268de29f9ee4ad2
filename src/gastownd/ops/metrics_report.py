"""metrics: the HTTP endpoint's text over the main socket, for machines with no HTTP."""

from __future__ import annotations

import anyio.to_thread

from gastown_client.protocol import Metrics, MetricsResult
from gastownd.process.daemon import Daemon

# What choose_encoder reads as "the classic text format".
_CLASSIC = "text/plain"


async def metrics(daemon: Daemon, request: Metrics) -> MetricsResult:
    # At the first scrape, not at start: no other answer needs them (prometheus_client).
    from gastownd.metrics.collector import gather
    from gastownd.metrics.exposition import render

    snapshot = await gather(daemon)
    accept = None if request.format == "openmetrics" else _CLASSIC
    text, content_type = await anyio.to_thread.run_sync(render, snapshot, accept)
    return MetricsResult(content_type=content_type, text=text.decode("utf-8"))
