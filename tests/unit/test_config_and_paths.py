"""Configuration decoding and path resolution."""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import tempfile
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gastown_client import paths
from gastownd.process.config import (
    KEYS,
    Config,
    Key,
    parse_duration,
    plan_reload,
)
from gastownd.process.config_file import load_config, read_config_file
from gastownd.process.refusals import EXIT_CONFIG, ConfigError


def test_defaults_without_a_file() -> None:
    config = load_config(None)
    assert config == Config()
    assert config.eventlog.durability == "sync"
    assert config.server.max_frame_bytes == 1 << 20


def test_a_full_file_decodes(tmp_path: Path) -> None:
    path = tmp_path / "g.toml"
    path.write_text(
        'log_level = "debug"\n[eventlog]\ndurability = "write"\n'
        'sync_interval = "10ms"\n[retention]\nttls = { mail = "2d" }\n'
    )
    config = load_config(path)
    assert config.log_level == "debug"
    assert config.eventlog.durability == "write"
    assert config.retention.ttls == {"mail": "2d"}


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("bogus = 1\n", "bogus"),
        ("[eventlog]\ndurability = 3\n", "$.eventlog.durability"),
        ('[eventlog]\ndurability = "maybe"\n', "$.eventlog.durability"),
        ('[retention]\ndefault_ttl = "forever"\n', "forever"),
        ("[server]\nmax_frame_bytes = 10\n", "max_frame_bytes"),
        ("not toml = = =\n", "not valid TOML"),
        ('[retention]\nprune_interval = "0s"\n', "retention.prune_interval = '0s' is out of range"),
        ('[wisps]\nreap_interval = "0ms"\n', "wisps.reap_interval = '0ms' is out of range"),
        ('[eventlog]\nwatch_step = "0ms"\n', "eventlog.watch_step = '0ms' is out of range"),
        ('[server]\npartial_frame_timeout = "0s"\n', "server.partial_frame_timeout"),
        (f"[server]\nmax_frame_bytes = {2**63}\n", "(1024 to 67108864)"),
        ('[retention]\ndefault_ttl = "99999999999d"\n', "(1s to 36500d)"),
        ("[server]\nmax_connections = -1\n", "server.max_connections = -1"),
        ("[server]\nmax_connections = nan\n", "$.server.max_connections"),
        ('[hooks]\nspool_grace = "5s junk"\n', "hooks.spool_grace: invalid duration"),
        ('[retention.ttls]\nmail = "0s"\n', "retention.ttls['mail'] = '0s'"),
        ('[eventlog]\nsource = "a b"\n', "eventlog.source"),
        ("[server]\nmax_connections = " + "9" * 5000 + "\n", "a number has too many digits"),
        ("a = " + "[" * 5000 + "]" * 5000 + "\n", "nested too deeply"),
        ('[federation]\nservers = ["localhost:4222"]\n', "must be a URL such as nats://"),
        ('[federation]\nservers = ["nats://::::"]\n', "'nats://::::' must be a URL"),
        ('[federation]\nservers = ["nats://127.0.0.1:99999"]\n', "a port from 1 to 65535"),
        ('[federation]\nservers = ["nats://h:0"]\n', "a port from 1 to 65535"),
        ('[federation]\nservers = ["nats://:4222"]\n', "a host"),
        ('[federation]\nservers = ["http://h:4222"]\n', "scheme nats, tls, ws or wss"),
        ('[federation]\nservers = ["nats://[::1"]\n', "must be a URL"),
    ],
)
def test_bad_config_stops_startup_naming_the_key(tmp_path: Path, text: str, needle: str) -> None:
    path = tmp_path / "g.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert needle in str(info.value)
    assert str(info.value).startswith(f"{path}: ")
    assert "\n" not in str(info.value)
    assert info.value.exit_code == EXIT_CONFIG == 78


@pytest.mark.parametrize(
    ("raw", "needle"),
    [
        (b'log_level = "\xff"\n', "not UTF-8 (byte 0xff at offset 13)"),
        (b"\xef\xbb\xbf\xc0\x80", "not UTF-8"),
        (b"# " + b"x" * (1 << 20) + b"\n", "larger than 1048576 bytes"),
    ],
)
def test_a_file_that_is_no_settings_file_is_refused(
    tmp_path: Path, raw: bytes, needle: str
) -> None:
    path = tmp_path / "g.toml"
    path.write_bytes(raw)
    with pytest.raises(ConfigError, match=re.escape(needle)):
        load_config(path)


def test_a_byte_order_mark_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "g.toml"
    path.write_bytes(b'\xef\xbb\xbflog_level = "debug"\n')
    assert load_config(path).log_level == "debug"


def test_a_fifo_in_place_of_the_file_is_refused_without_waiting(tmp_path: Path) -> None:
    fifo = tmp_path / "g.toml"
    os.mkfifo(fifo)
    with pytest.raises(ConfigError, match="it is a FIFO or a socket, not a file"):
        load_config(fifo)


def test_dev_null_is_an_empty_config() -> None:
    assert load_config(Path("/dev/null")) == Config()


def test_a_config_path_that_is_a_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="the config file is a directory"):
        load_config(tmp_path)


def test_the_default_file_may_be_absent_but_an_explicit_one_may_not(tmp_path: Path) -> None:
    assert read_config_file(tmp_path / "absent.toml", required=False) is None
    with pytest.raises(ConfigError, match="does not exist"):
        read_config_file(tmp_path / "absent.toml", required=True)


def test_missing_explicit_config_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "absent.toml")


@pytest.mark.parametrize(
    ("text", "seconds"), [("250ms", 0.25), ("30s", 30), ("2h", 7200), ("7d", 604800), ("1.5m", 90)]
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    "text", ["", "5", "-5s", "1h30m", "\u0663s", "1e3s", "nan s", "9" * 16 + "s"]
)
def test_parse_duration_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration(text)


def test_town_root_resolution_order(tmp_path: Path) -> None:
    outer = tmp_path / "town"
    inner = outer / "rig" / "crew" / "joe"
    inner.mkdir(parents=True)
    (outer / "mayor").mkdir()
    (outer / "mayor" / "town.json").write_text("{}")
    assert paths.find_town_root(environ={}, cwd=inner, home=tmp_path) == outer
    assert paths.find_town_root("/x/y", environ={"GT_TOWN_ROOT": "/z"}) == Path("/x/y")
    assert paths.find_town_root(environ={"GT_TOWN_ROOT": "/z"}, cwd=inner) == Path("/z")
    assert paths.find_town_root(environ={"GT_ROOT": "/w"}, cwd=inner) == Path("/w")
    assert paths.find_town_root(environ={}, cwd=tmp_path, home=tmp_path) == tmp_path / "gt"
    assert not (tmp_path / "gt").exists()
    paths.find_town_root(environ={}, cwd=tmp_path, home=tmp_path, create=True)
    assert (tmp_path / "gt").is_dir()


def test_outermost_town_wins(tmp_path: Path) -> None:
    for town in (tmp_path / "a", tmp_path / "a" / "b"):
        (town / "mayor").mkdir(parents=True)
        (town / "mayor" / "town.json").write_text("{}")
    assert paths.find_town_root(environ={}, cwd=tmp_path / "a" / "b") == tmp_path / "a"


def test_socket_path_override_and_short_fallback(tmp_path: Path) -> None:
    town = Path("/tmp/t")
    assert paths.socket_path(town, {}) == town / ".gastownd" / "gastownd.sock"
    assert paths.socket_path(town, {"GASTOWND_SOCKET": "/run/x.sock"}) == Path("/run/x.sock")
    deep = Path("/tmp/" + "d" * 120)
    fallback = paths.socket_path(deep, {"TMPDIR": "/elsewhere"})
    assert len(str(fallback)) < paths.SUN_PATH_MAX
    assert fallback == paths.socket_path(deep, {})  # independent of per-shell variables
    assert str(fallback).startswith("/tmp/gastownd-")
    assert paths.socket_path(Path("/tmp/" + "e" * 120), {}) != fallback


def test_a_bare_mayor_dir_marks_a_town_when_no_town_json_exists(tmp_path: Path) -> None:
    (tmp_path / "a" / "mayor").mkdir(parents=True)
    (tmp_path / "a" / "b").mkdir()
    assert paths.find_town_root(environ={}, cwd=tmp_path / "a" / "b") == tmp_path / "a"


def test_configured_ttls_override_gas_town_defaults_type_by_type(tmp_path: Path) -> None:
    from gastownd.eventlog.pruner import policy_from_config

    path = tmp_path / "g.toml"
    path.write_text('[retention]\nttls = { mail = "2d", "x_*" = "1h" }\n')
    policy = policy_from_config(load_config(path).retention)
    assert policy.ttl_for("mail") == 2 * 86400
    assert policy.ttl_for("x_y") == 3600
    assert policy.ttl_for("sling") == 14 * 86400


def test_the_event_loop_is_uvloop_when_asked_or_installed(tmp_path: Path) -> None:
    from gastownd.process.command import loop_options

    assert loop_options("asyncio") == {}
    assert loop_options("uvloop") == {"use_uvloop": True}
    try:
        import uvloop  # noqa: F401
    except ImportError:
        assert loop_options("auto") == {}
    else:
        assert loop_options("auto") == {"use_uvloop": True}
    config = tmp_path / "c.toml"
    config.write_text('[server]\nevent_loop = "trio"\n')
    with pytest.raises(ConfigError, match="event_loop"):
        load_config(config)


# ---------------------------------------------------------------- the table of keys

DOCS = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def leaf_keys(struct: type[msgspec.Struct], prefix: str = "") -> list[str]:
    names = []
    for field in msgspec.structs.fields(struct):
        default = (
            field.default_factory() if field.default_factory is not msgspec.NODEFAULT else None
        )
        if isinstance(default, msgspec.Struct):
            names += leaf_keys(type(default), f"{field.name}.")
        else:
            names.append(prefix + field.name)
    return names


def test_every_key_is_declared_once_with_its_range() -> None:
    declared = [key.name for key in KEYS]
    assert sorted(declared) == sorted(set(declared))
    assert sorted(declared) == sorted(leaf_keys(Config))


def test_every_default_is_in_its_range() -> None:
    config = Config()
    for key in KEYS:
        key.check(key.get(config))


def test_the_docs_give_every_keys_range_and_reload_behaviour() -> None:
    text = DOCS.read_text()
    section = text.split("## Every key's range", 1)[1].split("\n## ", 1)[0]
    rows = [
        tuple(cell.strip() for cell in line.strip("|").split("|"))
        for line in section.splitlines()
        if line.startswith("| `")
    ]
    expected = [
        (f"`{key.name}`", key.range_text(), "at once" if key.reload else "at restart")
        for key in KEYS
    ]
    assert rows == expected, "\n".join(f"| {' | '.join(row)} |" for row in expected)


def test_a_reload_applies_what_it_can_and_names_what_waits_for_a_restart() -> None:
    running = Config()
    loaded = msgspec.convert(
        {
            "log_level": "debug",
            "server": {"max_connections": 10, "shutdown_timeout": "2s"},
            "eventlog": {"source": "other"},
            "hooks": {"spool_grace": "1s"},
            "federation": {"batch": 7},
        },
        Config,
    )
    plan = plan_reload(running, loaded)
    assert plan.applied == ["log_level", "server.shutdown_timeout", "hooks.spool_grace"]
    assert plan.waiting == ["server.max_connections", "eventlog.source", "federation.batch"]
    assert plan.config.log_level == "debug"
    assert plan.config.server.shutdown_timeout == "2s"
    assert plan.config.hooks.spool_grace == "1s"
    # What runs stays what runs, and a later reload still says it waits.
    assert plan.config.server.max_connections == 512
    assert plan.config.eventlog.source == "gt"
    assert plan.config.federation.batch == 256
    assert plan_reload(plan.config, loaded).waiting == plan.waiting
    # Reverting the file: nothing waits any more.
    assert plan_reload(plan.config, running).waiting == []


# ---------------------------------------------------------------- hostile values, generated


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return (
            "nan"
            if math.isnan(value)
            else ("inf" if value > 0 else "-inf")
            if math.isinf(value)
            else repr(value)
        )
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    return "{" + ", ".join(f"{json.dumps(k)} = {toml_value(v)}" for k, v in value.items()) + "}"


def toml_for(key: Key, value: Any) -> str:
    if not key.section:
        return f"{key.field} = {toml_value(value)}\n"
    return f"[{key.section}]\n{key.field} = {toml_value(value)}\n"


HOSTILE = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([0, -1, 2**63, 2**63 - 1, 2**64, -(2**63)]),
    st.floats(),
    st.booleans(),
    st.text(max_size=30),
    st.sampled_from(
        [
            "0s",
            "0ms",
            "0.0001ms",
            "99999999999d",
            "-1s",
            "1h30m",
            "NaN",
            "inf s",
            "5s junk",
            "\u0663s",
            "",
            " ",
            "10 s",
            "1e3s",
            "\x00",
            "a b",
            "x" * 5000,
            "1w",
            "\ud800",
        ]
    ),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=5), st.one_of(st.integers(), st.text(max_size=8)), max_size=3),
)


def load_text(text: str) -> Config:
    with tempfile.NamedTemporaryFile(
        "w", suffix=".toml", encoding="utf-8", errors="surrogatepass"
    ) as file:
        file.write(text)
        file.flush()
        return load_config(Path(file.name))


@settings(max_examples=400, deadline=None)
@given(key=st.sampled_from(KEYS), value=HOSTILE)
def test_any_value_is_taken_in_range_or_refused_with_a_config_error(key: Key, value: Any) -> None:
    refusal: ConfigError | None = None
    try:
        config = load_text(toml_for(key, value))
    except ConfigError as exc:
        refusal = exc
    if refusal is not None:
        assert refusal.exit_code == EXIT_CONFIG
        assert "\n" not in refusal.message
        return
    # Accepted: then it is what the file says, and inside the declared range.
    taken = key.get(config)
    key.check(taken)
    if key.kind == "duration" and taken:
        assert 0 < parse_duration(taken) < math.inf


@settings(max_examples=200, deadline=None)
@given(raw=st.binary(max_size=200))
def test_any_bytes_are_a_config_or_a_config_error(raw: bytes) -> None:
    with tempfile.NamedTemporaryFile("wb", suffix=".toml") as file:
        file.write(raw)
        file.flush()
        with contextlib.suppress(ConfigError):
            load_config(Path(file.name))


BOUNDED = [key for key in KEYS if key.kind in ("duration", "integer")]


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_every_value_inside_a_range_is_taken(data: st.DataObject) -> None:
    key = data.draw(st.sampled_from(BOUNDED))
    if key.kind == "integer":
        assert isinstance(key.low, int) and isinstance(key.high, int)
        value: Any = data.draw(st.integers(key.low, key.high))
    else:
        low_ms = math.ceil(parse_duration(str(key.low)) * 1000)
        high_ms = math.floor(parse_duration(str(key.high)) * 1000)
        value = f"{data.draw(st.integers(low_ms, high_ms))}ms"
    text = toml_for(key, value)
    if key.name == "federation.stream_max_age":
        text += 'duplicate_window = "1s"\n'
    assert key.get(load_text(text)) == value
