"""NATS security for the federation tests: a TLS certificate authority and JWT credentials.

Certificates come from ``openssl`` (a CA, a server certificate for a DNS name, and client
certificates). Credentials are what ``nsc`` would make, minted here with the ``nkeys``
package: an operator, a system account, the town's account (JetStream enabled) and one
user per node whose permissions are exactly the least-privilege set of
docs/federation.md, written into a ``.creds`` file.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SERVER_NAME = "nats.gastown.test"


def make_ca(folder: Path) -> dict[str, Path]:
    """A CA, a server certificate for SERVER_NAME and a client certificate, as PEM files."""
    folder.mkdir(parents=True, exist_ok=True)

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=folder)

    run("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "ca.key")
    run("req", "-x509", "-new", "-key", "ca.key", "-days", "2", "-subj", "/CN=gastown test CA",
        "-out", "ca.pem")  # fmt: skip
    for name, usage in (("server", "serverAuth"), ("client", "clientAuth")):
        run("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", f"{name}.key")
        run("req", "-new", "-key", f"{name}.key", "-subj", f"/CN={name}", "-out", f"{name}.csr")
        (folder / f"{name}.ext").write_text(
            f"subjectAltName=DNS:{SERVER_NAME}\nextendedKeyUsage={usage}\n"
        )
        run("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-days", "2", "-extfile", f"{name}.ext",
            "-out", f"{name}.pem")  # fmt: skip
    return {
        n: folder / n for n in ("ca.pem", "server.pem", "server.key", "client.pem", "client.key")
    }


def node_permissions(town: str, node: str) -> dict[str, Any]:
    """What a node may do on the town's stream, and nothing more (docs/federation.md)."""
    stream, durable = f"GASTOWN_{town}", f"gastownd_{node}"
    return {
        "pub": {
            "allow": [
                f"gastown.{town}.{node}.>",
                f"$JS.API.STREAM.INFO.{stream}",
                f"$JS.API.CONSUMER.INFO.{stream}.{durable}",
                f"$JS.API.CONSUMER.CREATE.{stream}.{durable}.>",
                f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{durable}",
                f"$JS.ACK.{stream}.{durable}.>",
            ]
        },
        "sub": {"allow": [f"_INBOX_{node}.>"]},
    }


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


@dataclass
class _Key:
    seed: str
    public: str
    pair: Any


def _key(prefix: int) -> _Key:
    import nkeys

    seed = nkeys.encode_seed(os.urandom(32), prefix)
    pair = nkeys.from_seed(bytearray(seed))
    return _Key(seed.decode(), pair.public_key.decode(), pair)


def _jwt(issuer: _Key, subject: str, name: str, claims: dict[str, Any]) -> str:
    body: dict[str, Any] = {
        "jti": "",
        "iat": int(time.time()),
        "iss": issuer.public,
        "name": name,
        "sub": subject,
        "nats": {**claims, "version": 2},
    }
    digest = hashlib.new("sha512_256", json.dumps(body).encode()).digest()
    body["jti"] = base64.b32encode(digest).decode().rstrip("=")
    head = _b64(json.dumps({"typ": "JWT", "alg": "ed25519-nkey"}).encode())
    signing = f"{head}.{_b64(json.dumps(body).encode())}"
    return f"{signing}.{_b64(issuer.pair.sign(signing.encode()))}"


UNLIMITED = {"subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1,
             "wildcards": True, "conn": -1, "leaf": -1}  # fmt: skip
JETSTREAM = {"mem_storage": -1, "disk_storage": -1, "streams": -1, "consumer": -1}


class Operator:
    """An operator, its system account and one town account, for an operator-mode server."""

    def __init__(self) -> None:
        import nkeys

        self.operator = _key(nkeys.PREFIX_BYTE_OPERATOR)
        self.system = _key(nkeys.PREFIX_BYTE_ACCOUNT)
        self.account = _key(nkeys.PREFIX_BYTE_ACCOUNT)
        self._prefix_user = nkeys.PREFIX_BYTE_USER

    def server_config(self) -> str:
        op = self.operator
        operator_jwt = _jwt(op, op.public, "gastown", {"type": "operator"})
        system_jwt = _jwt(op, self.system.public, "SYS", {"type": "account", "limits": UNLIMITED})
        account_jwt = _jwt(
            op, self.account.public, "TOWN", {"type": "account", "limits": UNLIMITED | JETSTREAM}
        )
        return (
            f"operator: {operator_jwt}\nsystem_account: {self.system.public}\n"
            "resolver: MEMORY\nresolver_preload: {\n"
            f"  {self.system.public}: {system_jwt}\n  {self.account.public}: {account_jwt}\n}}\n"
        )

    def creds(self, path: Path, name: str, permissions: dict[str, Any] | None = None) -> Path:
        """A .creds file for a user of the town's account (no permissions: may do anything)."""
        user = _key(self._prefix_user)
        claims: dict[str, Any] = {"type": "user", "subs": -1, "data": -1, "payload": -1}
        claims.update(permissions or {})
        token = _jwt(self.account, user.public, name, claims)
        path.write_text(
            f"-----BEGIN NATS USER JWT-----\n{token}\n------END NATS USER JWT------\n\n"
            f"-----BEGIN USER NKEY SEED-----\n{user.seed}\n------END USER NKEY SEED------\n"
        )
        path.chmod(0o600)
        return path
