"""Reading the settings file: whole, bounded, never blocking, every failure a ``ConfigError``
whose message starts with the path (start-up and SIGHUP refuse a file the same way)."""

from __future__ import annotations

import errno
import os
import stat
import tomllib
from pathlib import Path

import msgspec

from gastownd.process.config import Config
from gastownd.process.refusals import ConfigError

# A settings file is a few hundred bytes; anything near this is not one.
MAX_CONFIG_BYTES = 1 << 20


def load_config(path: Path | None) -> Config:
    """Read ``path`` (None: all defaults); raises ConfigError."""
    if path is None:
        return Config()
    config = read_config_file(path, required=True)
    assert config is not None
    return config


def read_config_file(path: Path, *, required: bool) -> Config | None:
    """The configuration in ``path``, or None when it is absent and not ``required``.

    Raises ConfigError, whose message starts with the path, for anything else: a file
    that cannot be read, is too big, is not UTF-8 or not TOML, or holds a key outside
    its range. Never anything else, so start-up and SIGHUP refuse it the same way.
    """
    try:
        raw = read_regular_file(path, MAX_CONFIG_BYTES + 1)
    except (FileNotFoundError, NotADirectoryError):
        # NotADirectoryError: a town (or settings/) that is a file, refused elsewhere.
        if not required:
            return None
        raise ConfigError(f"{path}: the config file does not exist") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: the config file is a directory") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config file: {exc.strerror}") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{path}: the config file is larger than {MAX_CONFIG_BYTES} bytes")
    try:
        # A byte-order mark, as some editors write, is not an error.
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{path}: the config file is not UTF-8 (byte 0x{raw[exc.start]:02x} at offset "
            f"{exc.start})"
        ) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {_one_line(str(exc))}") from None
    except ValueError:
        # tomllib lets int() refuse a number of thousands of digits.
        raise ConfigError(f"{path}: not valid TOML: a number has too many digits") from None
    except RecursionError:
        raise ConfigError(f"{path}: not valid TOML: nested too deeply") from None
    try:
        return msgspec.convert(data, Config)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"{path}: {_one_line(str(exc))}") from None


def read_regular_file(path: Path, limit: int) -> bytes:
    """At most ``limit`` bytes of ``path`` (a file, or a device such as /dev/null).

    Opened without blocking and checked before the read: a FIFO in place of the file
    would otherwise hang start-up, or the running daemon at SIGHUP.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as file:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))
        if stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode):
            raise OSError(errno.EINVAL, "it is a FIFO or a socket, not a file", str(path))
        return file.read(limit)


def _one_line(text: str) -> str:
    return " ".join(text.split("\n"))
