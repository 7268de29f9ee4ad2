"""Metrics: counters kept by the running parts, exposed in the OpenMetrics text format.

- ``buckets``: the integers and bucket arrays the hot paths update (no Prometheus here);
- ``address``: where the HTTP endpoint may listen (loopback unless allowed);
- ``collector``: at scrape time, a snapshot of every part, turned into metric
  families by ``prometheus_client``;
- ``http``: ``/metrics`` and ``/healthz`` on a thread of their own.

The ``metrics`` op (``gastownd.ops.metrics_report``) serves the same text over the main socket.
"""
