"""Where the metrics endpoint listens: ``host:port``, ``[v6]:port`` or ``unix:PATH``.

Pure: ``config.py`` checks ``[metrics] listen`` with it, so that a remote
address without ``allow_remote = true`` stops start-up as a config error.
"""

from __future__ import annotations

import ipaddress

import msgspec


class TcpAddress(msgspec.Struct, frozen=True):
    host: str
    port: int
    ipv6: bool

    @property
    def loopback(self) -> bool:
        return ipaddress.ip_address(self.host).is_loopback

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if self.ipv6 else f"{self.host}:{self.port}"


class UnixAddress(msgspec.Struct, frozen=True):
    path: str

    loopback = True  # only this machine can reach it

    def __str__(self) -> str:
        return f"unix:{self.path}"


ListenAddress = TcpAddress | UnixAddress


def parse_listen(text: str) -> ListenAddress:
    """``"127.0.0.1:9464"``, ``"[::1]:9464"``, ``"localhost:9464"`` or ``"unix:/path"``.

    Raises ValueError naming what is wrong. Host names other than
    ``localhost`` are refused: what they resolve to can change under us.
    """
    if text.startswith("unix:"):
        path = text[len("unix:") :]
        if not path.startswith("/") or "\0" in path:
            raise ValueError(f"listen {text!r}: a Unix socket needs an absolute path")
        try:
            encoded = path.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError(f"listen {text!r}: the path is not valid UTF-8") from None
        if len(encoded) > 100:
            raise ValueError(f"listen {text!r}: the socket path is longer than 100 bytes")
        return UnixAddress(path)
    host, sep, port_text = text.rpartition(":")
    if not sep or not host:
        raise ValueError(f"listen {text!r}: expected HOST:PORT, [IPV6]:PORT or unix:PATH")
    valid_digits = 0 < len(port_text) <= 5 and port_text.isascii() and port_text.isdigit()
    if not valid_digits or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"listen {text!r}: the port must be a number from 0 to 65535")
    ipv6 = host.startswith("[") and host.endswith("]")
    if ipv6:
        host = host[1:-1]
    if host == "localhost":
        host = "127.0.0.1"
    try:
        parsed = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(
            f"listen {text!r}: the host must be an IP address (or localhost)"
        ) from None
    if (parsed.version == 6) != ipv6:
        raise ValueError(f"listen {text!r}: write an IPv6 address in brackets, [::1]:9464")
    return TcpAddress(str(parsed), int(port_text), ipv6)


def check_listen(text: str, allow_remote: bool) -> ListenAddress:
    """``parse_listen``, refusing a non-loopback address unless ``allow_remote``."""
    address = parse_listen(text)
    if not address.loopback and not allow_remote:
        raise ValueError(
            f"listen {text!r} is reachable from other machines; metrics listen on a "
            "loopback address or a Unix socket unless allow_remote = true"
        )
    return address
