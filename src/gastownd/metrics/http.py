"""``/metrics`` and ``/healthz`` over HTTP, on a thread of the daemon's own.

The stdlib's WSGI server (one request at a time, a socket timeout against
clients that stall) runs in an anyio worker thread owned by the daemon's
task group: cancelling that group shuts it down. A scrape hops to the event
loop only to copy the counters (``collector.gather``); rendering the text
happens in the thread, so the loop never waits on a scraper's socket.
The endpoint is bound once the rest of the daemon runs, just before it
reports ready, so "it answers" already means ready; ``/healthz`` answers
200, or 503 once the daemon is stopping, without touching the loop.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import socketserver
import stat
from collections.abc import Callable, Iterable
from functools import partial
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

import anyio
import anyio.abc
import anyio.from_thread
import anyio.to_thread
import structlog

from gastownd.metrics.address import ListenAddress, TcpAddress, UnixAddress, check_listen
from gastownd.metrics.collector import gather
from gastownd.metrics.exposition import render
from gastownd.process.daemon import Daemon
from gastownd.process.refusals import StartupError

log = structlog.get_logger("gastownd.metrics")

# A client that sends nothing for this long is dropped (one request is served at a time).
CLIENT_TIMEOUT_S = 5.0
# How often the server thread looks whether it was asked to stop.
POLL_S = 0.2

StartResponse = Callable[[str, list[tuple[str, str]]], Any]


class _Handler(WSGIRequestHandler):
    timeout = CLIENT_TIMEOUT_S

    def setup(self) -> None:
        if not isinstance(self.client_address, tuple):  # a Unix socket's peer has no address
            self.client_address = ("unix", 0)
        super().setup()

    def log_message(self, format: str, *args: Any) -> None:
        pass  # a scrape a second is not worth a log line


class _TcpServer(WSGIServer):
    allow_reuse_address = True

    def server_bind(self) -> None:
        # Not HTTPServer.server_bind: it looks the host's name up (DNS) for nothing.
        socketserver.TCPServer.server_bind(self)
        address = self.server_address
        self.server_name = "localhost"
        self.server_port = address[1] if isinstance(address, tuple) else 0
        self.setup_environ()

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.exception("metrics_request_failed")


class _Tcp6Server(_TcpServer):
    address_family = socket.AF_INET6


class _UnixServer(_TcpServer):
    address_family = socket.AF_UNIX
    allow_reuse_address = False


def bind(address: ListenAddress, app: Callable[..., Iterable[bytes]]) -> WSGIServer:
    """A bound, listening server (raises OSError)."""
    server: WSGIServer
    if isinstance(address, UnixAddress):
        _remove_stale_socket(address.path)
        server = _UnixServer(address.path, _Handler)  # type: ignore[arg-type]
        os.chmod(address.path, 0o600)
    else:
        cls = _Tcp6Server if address.ipv6 else _TcpServer
        server = cls((address.host, address.port), _Handler)
    server.set_app(app)
    return server


def _remove_stale_socket(path: str) -> None:
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(info.st_mode):
        raise OSError(17, f"{path} exists and is not a socket")
    os.unlink(path)


class MetricsEndpoint:
    """The HTTP endpoint of one daemon, at its ``[metrics] listen`` address."""

    def __init__(self, daemon: Daemon) -> None:
        listen = daemon.config.metrics.listen
        assert listen, "[metrics] listen is not set"
        self.daemon = daemon
        # Checked when the config was loaded: this cannot refuse it any more.
        self.address: ListenAddress = check_listen(listen, daemon.config.metrics.allow_remote)
        self.bound: str = str(self.address)

    @property
    def state(self) -> str:
        server = self.daemon.server
        return "stopping" if server.stopping else "ready"

    async def serve(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Bind (a failure stops start-up), then serve until cancelled."""
        try:
            server = bind(self.address, self._app)
        except OSError as exc:
            hint = (
                " (a sandbox such as the systemd unit's RestrictAddressFamilies=AF_UNIX "
                "forbids it: allow AF_INET/AF_INET6 in a drop-in, or listen on unix:PATH)"
                if exc.errno == errno.EAFNOSUPPORT
                else ""
            )
            raise StartupError(
                f"[metrics] listen {self.address}: {exc.strerror or exc}{hint}"
            ) from None
        if isinstance(self.address, TcpAddress):
            port = server.server_address[1]
            self.bound = str(TcpAddress(self.address.host, int(port), self.address.ipv6))
        log.info("metrics_listening", address=self.bound)
        try:
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(
                    partial(
                        anyio.to_thread.run_sync,
                        partial(server.serve_forever, poll_interval=POLL_S),
                        limiter=anyio.CapacityLimiter(1),
                    )
                )
                task_status.started()
                try:
                    await anyio.sleep_forever()
                finally:
                    with anyio.CancelScope(shield=True):
                        await anyio.to_thread.run_sync(server.shutdown)
        finally:
            server.server_close()
            if isinstance(self.address, UnixAddress):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.address.path)

    # ------------------------------------------------------------ the server's thread

    def _app(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        method = environ.get("REQUEST_METHOD", "GET")
        path = environ.get("PATH_INFO", "")
        if method not in ("GET", "HEAD"):
            return _plain(start_response, "405 Method Not Allowed", b"GET or HEAD\n", method)
        if path == "/metrics":
            return self._metrics(environ, start_response, method)
        if path == "/healthz":
            status = "200 OK" if self.state == "ready" else "503 Service Unavailable"
            return _plain(start_response, status, f"{self.state}\n".encode(), method)
        return _plain(start_response, "404 Not Found", b"see /metrics and /healthz\n", method)

    def _metrics(
        self, environ: dict[str, Any], start_response: StartResponse, method: str
    ) -> Iterable[bytes]:
        try:
            snapshot = anyio.from_thread.run(gather, self.daemon)
        except anyio.RunFinishedError:
            return _plain(start_response, "503 Service Unavailable", b"stopping\n", method)
        body, content_type = render(snapshot, environ.get("HTTP_ACCEPT", ""))
        start_response(
            "200 OK", [("Content-Type", content_type), ("Content-Length", str(len(body)))]
        )
        return [] if method == "HEAD" else [body]


def _plain(start_response: StartResponse, status: str, body: bytes, method: str) -> list[bytes]:
    start_response(
        status,
        [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body)))],
    )
    return [] if method == "HEAD" else [body]
