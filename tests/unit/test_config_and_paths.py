"""Configuration decoding and path resolution."""

from __future__ import annotations

from pathlib import Path

import pytest

from gastown_client import paths
from gastownd.config import Config, load_config, parse_duration
from gastownd.errors import StartupError


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
    ],
)
def test_bad_config_stops_startup_naming_the_key(tmp_path: Path, text: str, needle: str) -> None:
    path = tmp_path / "g.toml"
    path.write_text(text)
    with pytest.raises(StartupError) as info:
        load_config(path)
    assert needle in str(info.value)


def test_missing_explicit_config_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(StartupError, match="does not exist"):
        load_config(tmp_path / "absent.toml")


@pytest.mark.parametrize(
    ("text", "seconds"), [("250ms", 0.25), ("30s", 30), ("2h", 7200), ("7d", 604800), ("1.5m", 90)]
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


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
    from gastownd.pruner import policy_from_config

    path = tmp_path / "g.toml"
    path.write_text('[retention]\nttls = { mail = "2d", "x_*" = "1h" }\n')
    policy = policy_from_config(load_config(path).retention)
    assert policy.ttl_for("mail") == 2 * 86400
    assert policy.ttl_for("x_y") == 3600
    assert policy.ttl_for("sling") == 14 * 86400


def test_the_event_loop_is_uvloop_when_asked_or_installed(tmp_path: Path) -> None:
    from gastownd.cli import loop_options

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
    with pytest.raises(StartupError, match="event_loop"):
        load_config(config)
