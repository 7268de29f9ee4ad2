"""Metrics end to end: the HTTP endpoint, the metrics op, and a real Prometheus scraping them.

Prometheus and promtool come from Debian's ``prometheus`` package (``.ci/run`` installs
it); the tests that need them are skipped, with the reason, where they are missing.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import shutil
import signal
import socket
import subprocess
import tempfile
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families

from gastown_client import paths
from gastown_client.aclient import AsyncClient
from gastown_client.protocol import Metrics, MetricsResult
from gastownd.process.app import App, build_state
from tests.conftest import TEST_CONFIG, DaemonProcess, run_ctl
from tests.integration.test_hooks import payload, run_hook, wait_until
from tests.nats_cluster import cluster, free_port, nats_server_binary

CONTRIB = Path(__file__).resolve().parents[2] / "contrib" / "prometheus"
RULES = CONTRIB / "gastownd.rules.yml"
PROMETHEUS = shutil.which("prometheus")
PROMTOOL = shutil.which("promtool")
needs_prometheus = pytest.mark.skipif(
    PROMETHEUS is None, reason="no prometheus binary (Debian: apt-get install prometheus)"
)
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="no promtool binary (Debian: apt-get install prometheus)"
)


def with_metrics(town: Path, listen: str, extra: str = "") -> None:
    (town / "settings" / "gastownd.toml").write_text(
        TEST_CONFIG + f'\n[metrics]\nlisten = "{listen}"\n{extra}'
    )


def http_get(port: int, path: str, accept: str | None = None) -> tuple[int, str, str]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("GET", path, headers={"Accept": accept} if accept else {})
        response = connection.getresponse()
        return response.status, response.getheader("Content-Type", ""), response.read().decode()
    finally:
        connection.close()


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of an OpenMetrics text, by name and labels (the parser validates it)."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


@pytest.fixture
def metrics_proc(town: Path) -> Iterator[tuple[DaemonProcess, int]]:
    port = free_port()
    with_metrics(town, f"127.0.0.1:{port}")
    proc = DaemonProcess(town).wait_ready()
    yield proc, port
    if proc.proc.poll() is None:
        assert proc.terminate() == 0, proc.log()


# ---------------------------------------------------------------- the endpoint


def test_http_endpoint_serves_openmetrics_and_health(
    metrics_proc: tuple[DaemonProcess, int],
) -> None:
    proc, port = metrics_proc
    with proc.client() as client:
        for number in range(3):
            client.emit("sling", "gastown/crew/joe", {"n": number})
    status, content_type, text = http_get(
        port, "/metrics", accept="application/openmetrics-text; version=1.0.0"
    )
    assert status == 200 and content_type.startswith("application/openmetrics-text")
    found = samples(text)
    assert found[("gastownd_emits_total", ())] == 3
    assert found[("gastownd_requests_total", (("op", "emit"),))] == 3
    assert found[("gastownd_log_lines", ())] == 3
    assert found[("gastownd_fsync_seconds_count", ())] >= 1
    assert found[("gastownd_build_info", (("version", _version()),))] == 1
    assert ("process_resident_memory_bytes", ()) in found
    # Without OpenMetrics in Accept, Prometheus' classic text format.
    status, content_type, text = http_get(port, "/metrics")
    assert status == 200 and content_type.startswith("text/plain")
    assert "gastownd_emits_total 3.0" in text
    assert http_get(port, "/healthz")[:3:2] == (200, "ready\n")
    assert http_get(port, "/nope")[0] == 404


async def test_in_process_on_asyncio_the_endpoint_and_the_op_agree(town: Path) -> None:
    """The daemon on this test's asyncio loop: the HTTP thread hops to it for each scrape."""
    port = free_port()
    with_metrics(town, f"127.0.0.1:{port}")
    state = build_state(town, paths.default_config_path(town))
    app = App(state, install_signal_handlers=False)
    async with anyio.create_task_group() as tg:
        await tg.start(app.run)
        async with AsyncClient(state.paths.socket) as client:
            for number in range(4):
                await client.emit("sling", "gastown/crew/joe", {"n": number})
            result = await client.call(Metrics(), MetricsResult)
        status, _, text = await anyio.to_thread.run_sync(http_get, port, "/metrics")
        app.stop()
    assert result.content_type.startswith("application/openmetrics-text")
    assert samples(result.text)[("gastownd_emits_total", ())] == 4
    assert status == 200 and "gastownd_emits_total 4.0" in text


def test_metrics_op_and_gastownctl_metrics(
    metrics_proc: tuple[DaemonProcess, int], town: Path
) -> None:
    proc, _ = metrics_proc
    with proc.client() as client:
        client.emit("sling", "gastown/crew/joe")
    result = run_ctl(town, "metrics")
    assert result.returncode == 0, result.stderr
    found = samples(result.stdout)
    assert found[("gastownd_emits_total", ())] == 1
    # The ctl's own connection is counted once its metrics request is answered.
    assert ("gastownd_connections", ()) in found
    classic = run_ctl(town, "metrics", "--format", "prometheus")
    assert classic.returncode == 0 and "# EOF" not in classic.stdout
    assert "gastownd_emits_total 1.0" in classic.stdout


def test_a_scraper_that_stalls_never_stalls_emits(
    metrics_proc: tuple[DaemonProcess, int],
) -> None:
    proc, port = metrics_proc
    with socket.create_connection(("127.0.0.1", port), timeout=10) as stalled:
        stalled.sendall(b"GET /metr")  # and never the rest: the endpoint's thread waits on it
        with proc.client() as client:
            for number in range(50):
                client.emit("sling", "gastown/crew/joe", {"n": number})
            assert client.status().eventlog.appended == 50
        # Still held (the endpoint drops it after 5 s): the emits did not wait for it.
        stalled.setblocking(False)
        with pytest.raises(BlockingIOError):
            stalled.recv(1)
    status, _, text = http_get(port, "/metrics")
    assert status == 200 and "gastownd_emits_total 50.0" in text


def test_the_port_is_released_when_the_daemon_stops(
    metrics_proc: tuple[DaemonProcess, int],
) -> None:
    proc, port = metrics_proc
    assert proc.terminate() == 0, proc.log()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()


def test_metrics_on_a_unix_socket(town: Path) -> None:
    path = paths.private_dir(town) / "metrics.sock"
    with_metrics(town, f"unix:{path}")
    proc = DaemonProcess(town).wait_ready()
    try:
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(10)
            sock.connect(str(path))
            sock.sendall(b"GET /healthz HTTP/1.0\r\n\r\n")
            reply = b""
            while chunk := sock.recv(4096):
                reply += chunk
        assert reply.startswith(b"HTTP/1.0 200") and reply.endswith(b"ready\n")
        assert path.stat().st_mode & 0o777 == 0o600
    finally:
        assert proc.terminate() == 0, proc.log()
    assert not path.exists()


@pytest.mark.parametrize(
    ("listen", "why"),
    [
        ("0.0.0.0:9464", "reachable from other machines"),
        ("[::]:9464", "reachable from other machines"),
        ("192.0.2.1:9464", "reachable from other machines"),
        ("example.com:9464", "must be an IP address"),
        ("127.0.0.1:99999", "port must be a number"),
        ("unix:relative.sock", "absolute path"),
    ],
)
def test_remote_or_bad_listen_addresses_stop_start_up(town: Path, listen: str, why: str) -> None:
    with_metrics(town, listen)
    proc = DaemonProcess(town)
    assert proc.proc.wait(15) != 0
    assert f"listen {listen!r}" in proc.log() and why in proc.log()
    assert not paths.socket_path(town).exists()


def test_a_remote_address_is_allowed_with_allow_remote(town: Path) -> None:
    port = free_port()
    with_metrics(town, f"0.0.0.0:{port}", "allow_remote = true\n")
    proc = DaemonProcess(town).wait_ready()
    try:
        assert http_get(port, "/healthz")[0] == 200
    finally:
        assert proc.terminate() == 0, proc.log()


def test_a_taken_port_is_a_clear_start_up_error(town: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with_metrics(town, f"127.0.0.1:{taken.getsockname()[1]}")
        proc = DaemonProcess(town)
        assert proc.proc.wait(15) != 0
    assert "[metrics] listen 127.0.0.1:" in proc.log()


# ---------------------------------------------------------------- promtool


@needs_promtool
def test_promtool_checks_and_unit_tests_the_rules() -> None:
    assert PROMTOOL is not None
    for args in (
        ["check", "rules", str(RULES)],
        ["test", "rules", str(CONTRIB / "gastownd.rules.test.yml")],
        ["check", "config", str(CONTRIB / "prometheus.example.yml")],
    ):
        result = subprocess.run([PROMTOOL, *args], capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stdout + result.stderr


# ---------------------------------------------------------------- a real Prometheus


class Prometheus:
    """A Prometheus process scraping ``targets`` every second, its TSDB in a temp dir."""

    def __init__(self, targets: list[str]) -> None:
        assert PROMETHEUS is not None and PROMTOOL is not None
        self.folder = Path(tempfile.mkdtemp(prefix="prom-", dir="/tmp"))
        self.port = free_port()
        shutil.copy(RULES, self.folder / RULES.name)
        config = self.folder / "prometheus.yml"
        config.write_text(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
            f"rule_files:\n  - {RULES.name}\n"
            "scrape_configs:\n  - job_name: gastownd\n    scrape_timeout: 1s\n"
            f"    static_configs:\n      - targets: {json.dumps(targets)}\n"
        )
        checked = subprocess.run(
            [PROMTOOL, "check", "config", str(config)], capture_output=True, text=True, timeout=60
        )
        assert checked.returncode == 0, checked.stdout + checked.stderr
        self._log = open(self.folder / "prometheus.log", "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [
                PROMETHEUS,
                f"--config.file={config}",
                f"--storage.tsdb.path={self.folder / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--log.level=warn",
            ],
            stdout=self._log,
            stderr=self._log,
        )
        wait_until(lambda: self._get("/-/ready") is not None, timeout_s=30)

    def _get(self, path: str) -> Any:
        url = f"http://127.0.0.1:{self.port}{path}"
        with urllib.request.urlopen(url, timeout=5) as response:
            body = response.read()
        return json.loads(body) if path.startswith("/api/") else body

    def query(self, promql: str) -> dict[tuple[tuple[str, str], ...], float]:
        """An instant query: value by labels (without __name__, job and instance)."""
        reply = self._get("/api/v1/query?" + urllib.parse.urlencode({"query": promql}))
        assert reply["status"] == "success", reply
        return {
            tuple(
                sorted(
                    (k, v)
                    for k, v in item["metric"].items()
                    if k not in ("__name__", "job", "instance")
                )
            ): float(item["value"][1])
            for item in reply["data"]["result"]
        }

    def value(self, promql: str) -> float | None:
        found = self.query(promql)
        return next(iter(found.values())) if len(found) == 1 else None

    def api(self, path: str) -> Any:
        reply = self._get(path)
        assert reply["status"] == "success", reply
        return reply["data"]

    def log(self) -> str:
        return (self.folder / "prometheus.log").read_text(errors="replace")[-3000:]

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()
        shutil.rmtree(self.folder, ignore_errors=True)


@needs_prometheus
@needs_promtool
def test_a_real_prometheus_scrapes_what_was_done(town: Path) -> None:
    # Two hook calls while the daemon is down: they spool, and the start applies them.
    other = "9d8c7b6a-5f4e-4d3c-8b2a-1f0e9d8c7b6a"
    for call in (payload("SessionStart", source="startup"), payload("Stop")):
        assert run_hook(town, call).returncode == 0
    port = free_port()
    with_metrics(town, f"127.0.0.1:{port}")
    proc = DaemonProcess(town).wait_ready()
    prometheus = Prometheus([f"127.0.0.1:{port}"])
    try:
        assert wait_until(lambda: prometheus.value('up{job="gastownd"}') == 1, timeout_s=30)
        wait_until(lambda: prometheus.value("gastownd_hooks_spooled_total") == 2)
        assert prometheus.value("gastownd_emits_total") == 0
        emits = 37
        with proc.client() as client:
            for number in range(emits):
                client.emit("sling", "gastown/crew/joe", {"n": number})
        live = [
            payload("UserPromptSubmit", prompt="p"),
            payload("SessionEnd", reason="logout"),
            payload("SessionStart", session=other, source="startup"),
        ]
        for call in live:
            assert run_hook(town, call).returncode == 0
        with socket.socket(socket.AF_UNIX) as raw:  # one frame that is not JSON
            raw.connect(str(proc.socket))
            raw.sendall(b"{nope\n")
            raw.recv(4096)

        wait_until(
            lambda: (
                prometheus.value("gastownd_emits_total") == emits
                and prometheus.value('gastownd_hook_calls_total{event="SessionEnd"}') == 1
                and prometheus.value('gastownd_refused_total{reason="bad_request"}') == 1
            ),
            timeout_s=30,
        )
        assert prometheus.value('gastownd_requests_total{op="emit"}') == emits
        assert prometheus.query("gastownd_hook_calls_total") == {
            (("event", "SessionEnd"),): 1,
            (("event", "SessionStart"),): 2,
            (("event", "Stop"),): 1,
            (("event", "UserPromptSubmit"),): 1,
        }
        assert prometheus.value("gastownd_hooks_spooled_total") == 2
        assert prometheus.value("gastownd_digests_total") == 1
        assert prometheus.query("gastownd_sessions") == {
            (("state", "abandoned"),): 0,
            (("state", "logged"),): 0,
            (("state", "open"),): 1,
            (("state", "remote"),): 0,
            (("state", "squashed"),): 1,
        }
        # The emits plus the session lines the daemon wrote itself (two starts, one end).
        assert prometheus.value("gastownd_log_lines") == emits + 3
        assert prometheus.value("gastownd_fsync_seconds_count") >= 1  # type: ignore[operator]
        assert prometheus.value("gastownd_write_batch_lines_sum") == emits + 3
        assert prometheus.value('gastownd_request_seconds_count{op="emit"}') == emits
        assert prometheus.value("increase(gastownd_emits_total[1m])") is not None
        assert prometheus.value("gastownd_federation_connected") is None  # federation is off
        # Prometheus read OpenMetrics, and loaded the shipped rules.
        (target,) = prometheus.api("/api/v1/targets")["activeTargets"]
        assert target["health"] == "up" and target["lastError"] == "", target
        rules = [r for g in prometheus.api("/api/v1/rules")["groups"] for r in g["rules"]]
        assert len(rules) == 7 and all(r["health"] in ("ok", "unknown") for r in rules), rules
        # The calls spooled before the start make GastowndHooksSpooling fire.
        wait_until(
            lambda: (
                prometheus.query('ALERTS{alertname="GastowndHooksSpooling"}')
                == {
                    (
                        ("alertname", "GastowndHooksSpooling"),
                        ("alertstate", "firing"),
                        ("severity", "warning"),
                    ): 1
                }
            ),
            timeout_s=30,
        )

        # The daemon stops: the scrapes fail, and GastowndDown becomes pending.
        assert proc.terminate() == 0, proc.log()
        wait_until(lambda: prometheus.value('up{job="gastownd"}') == 0, timeout_s=30)
        wait_until(
            lambda: (
                prometheus.query('ALERTS{alertname="GastowndDown"}')
                == {
                    (
                        ("alertname", "GastowndDown"),
                        ("alertstate", "pending"),
                        ("severity", "critical"),
                    ): 1
                }
            ),
            timeout_s=30,
        )
    except BaseException:
        print(prometheus.log())
        raise
    finally:
        prometheus.close()
        if proc.proc.poll() is None:
            proc.kill()


def _version() -> str:
    from gastown_client import __version__

    return __version__


@needs_prometheus
@needs_promtool
@pytest.mark.skipif(nats_server_binary() is None, reason="nats-server not installed")
def test_a_real_prometheus_sees_a_federation_pair() -> None:
    hub = cluster(1).start()
    base = Path(tempfile.mkdtemp(prefix="gtm-", dir="/tmp"))
    town = f"m{uuid.uuid4().hex[:6]}"
    nodes: dict[str, tuple[DaemonProcess, int]] = {}
    prometheus: Prometheus | None = None
    try:
        for name in ("a", "b"):
            root = base / name
            (root / "mayor").mkdir(parents=True)
            (root / "mayor" / "town.json").write_text(json.dumps({"name": town}))
            (root / "settings").mkdir()
            port = free_port()
            (root / "settings" / "gastownd.toml").write_text(
                TEST_CONFIG
                + f'[federation]\nservers = ["{hub.urls[0]}"]\nnode = "{name}"\n'
                + f'[metrics]\nlisten = "127.0.0.1:{port}"\n'
            )
            nodes[name] = (DaemonProcess(root).wait_ready(), port)
        prometheus = Prometheus([f"127.0.0.1:{port}" for _, port in nodes.values()])
        instance = {name: f"127.0.0.1:{port}" for name, (_, port) in nodes.items()}

        def on(name: str, promql: str) -> float | None:
            return prometheus.value(promql.replace("$", f'instance="{instance[name]}"'))

        wait_until(
            lambda: (
                on("a", "gastownd_federation_connected{$}") == 1
                and on("b", "gastownd_federation_connected{$}") == 1
            ),
            timeout_s=30,
        )
        emits = 12
        with nodes["a"][0].client() as client:
            for number in range(emits):
                client.emit("sling", "gastown/crew/joe", {"n": number})
        wait_until(
            lambda: (
                on("b", 'gastownd_federation_applied_total{$, kind="events", node="a"}') == emits
            ),
            timeout_s=30,
        )
        assert on("b", "gastownd_federation_lag_seconds_count{$}") >= 1  # type: ignore[operator]
        wait_until(
            lambda: (
                on("a", 'gastownd_federation_backlog{$, kind="events"}') == 0
                and on("a", "gastownd_federation_published_total{$}") >= 1
            ),  # type: ignore[operator]
            timeout_s=30,
        )

        # A record that fails the checks: counted on both nodes, and the alert fires.
        async def forge() -> None:
            import nats as nats_client

            nc = await nats_client.connect(hub.urls)
            try:
                await nc.publish(f"gastown.{town}.evil.event", b'{"kind":"event"}')
                await nc.flush()
            finally:
                await nc.close()

        asyncio.run(forge())
        for name in ("a", "b"):
            wait_until(
                lambda name=name: (
                    on(name, 'gastownd_federation_rejected_total{$, reason="malformed"}') == 1
                ),
                timeout_s=30,
            )
        firing = 'ALERTS{alertname="GastowndFederationRejectedRecords", alertstate="firing"}'
        wait_until(lambda: prometheus.value(f"count({firing})") == 2, timeout_s=30)

        # NATS goes away: both nodes say so, and a's new lines wait in its backlog.
        hub.stop()
        wait_until(
            lambda: (
                on("a", "gastownd_federation_connected{$}") == 0
                and on("b", "gastownd_federation_connected{$}") == 0
            ),
            timeout_s=30,
        )
        with nodes["a"][0].client() as client:
            for number in range(5):
                client.emit("sling", "gastown/crew/joe", {"offline": number})
        wait_until(
            lambda: on("a", 'gastownd_federation_backlog{$, kind="events"}') == 5, timeout_s=30
        )
    except BaseException:
        if prometheus is not None:
            print(prometheus.log())
        for proc, _ in nodes.values():
            print(proc.log())
        raise
    finally:
        if prometheus is not None:
            prometheus.close()
        for proc, _ in nodes.values():
            if proc.proc.poll() is None:
                assert proc.terminate() == 0, proc.log()
        hub.cleanup()
        shutil.rmtree(base, ignore_errors=True)
