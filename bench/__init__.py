"""gastownd's benchmark suite (issue 7): ``make bench`` or ``python -m bench``.

Every figure is compared with a baseline measured in the same run, because
the machine is shared and noisy. Layout:

- ``__main__``: options (``--quick``, ``--only NAME``), the run, ``results.md``/``.json``.
- ``harness``: towns under /tmp, the daemon as a subprocess, /proc readers, statistics.
- ``worker``: load and observer processes (closed-loop clients, gt-style writers,
  subscribers, a bare watchfiles watcher), driven by msgpack jobs.
- ``broker``: the baseline asyncio server (echo, fan-out).
- ``loggen``: deterministic, realistic Gas Town logs, cached in ``bench/_work/``.
- ``suites``: one module per group of rows.
"""
