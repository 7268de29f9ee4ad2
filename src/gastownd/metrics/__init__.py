"""Metrics: counters kept by the running parts, exposed in the OpenMetrics text format.

- ``buckets``: the integers and bucket arrays the hot paths update (no Prometheus here);
- ``address``: where the HTTP endpoint may listen (loopback unless allowed);
- ``collector``: at scrape time, a snapshot of every part, on the event loop;
- ``exposition``: that snapshot as metric families and text, by ``prometheus_client``
  (imported at the first scrape, not at start);
- ``http``: ``/metrics`` and ``/healthz`` on a thread of their own.

The ``metrics`` op (``gastownd.ops.metrics_report``) serves the same text over the main socket.
"""
