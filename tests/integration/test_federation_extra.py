"""nats-py is the ``federation`` extra: without it, a town that configures federation is a
one-line refusal (exit 78), and one that does not starts as before."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from gastown_client import paths
from gastown_client.client import Client
from gastown_client.errors import DaemonUnavailable
from gastownd.process.refusals import EXIT_CONFIG
from tests.conftest import daemon_argv

# The daemon as ``python -m gastownd`` runs it, in a Python where ``import nats`` fails.
WITHOUT_NATS = (
    "import sys; sys.modules['nats'] = None; sys.argv[0] = 'gastownd'; "
    "from gastownd.process.command import main; raise SystemExit(main())"
)


def start_without_nats(town: Path) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-c", WITHOUT_NATS, *daemon_argv(town)[3:]]
    return subprocess.run(argv, capture_output=True, text=True, timeout=30)


def test_federation_configured_without_nats_is_a_one_line_refusal(town: Path) -> None:
    settings = paths.default_config_path(town)
    settings.write_text('[federation]\nservers = ["nats://127.0.0.1:4222"]\n')
    result = start_without_nats(town)
    assert result.returncode == EXIT_CONFIG, result.stderr
    assert result.stderr.splitlines() == [
        f"gastownd: {settings}: [federation] servers is set but nats-py is not installed: "
        "pip install 'gastownd[federation]'"
    ]
    assert not paths.socket_path(town).exists()


def test_without_federation_nats_is_not_needed(town: Path) -> None:
    process = subprocess.Popen(
        [sys.executable, "-c", WITHOUT_NATS, *daemon_argv(town)[3:]],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 15
        while True:
            assert process.poll() is None, process.communicate()[1]
            try:
                with Client(paths.socket_path(town), connect_timeout_s=0.5) as client:
                    assert client.status().federation.enabled is False
                break
            except DaemonUnavailable:
                assert time.monotonic() < deadline, "the daemon did not start"
                time.sleep(0.02)
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=30)
    assert process.returncode == 0, stderr
