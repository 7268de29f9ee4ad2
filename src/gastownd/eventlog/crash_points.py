"""TEST-ONLY: the points of a prune where a test may have the daemon, or its worker, killed.

Never set ``GASTOWND_TEST_CRASH_AT`` outside tests (docs/reliability.md, "Test-only
switches").
"""

from __future__ import annotations

import os
import signal

TEST_CRASH_ENV = "GASTOWND_TEST_CRASH_AT"


def crash_here_for_tests(point: str) -> None:
    """TEST-ONLY: die by SIGKILL at ``point`` when ``GASTOWND_TEST_CRASH_AT`` names it.

    Lets the reliability tests kill the daemon at an exact step of a prune
    (``archive_written``: after the archive batch is durable, before the
    swap; ``swapped``: after the swap, before the journal is removed), or the
    prune's worker process (``planner``: before it answers with the plan;
    ``archive_member``: once it wrote the batch's first member).
    Never set it outside tests.
    """
    if os.environ.get(TEST_CRASH_ENV) == point:
        os.kill(os.getpid(), signal.SIGKILL)
