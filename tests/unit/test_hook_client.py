"""The hook client without sockets: frame splicing, escaping, path rules, imports.

The contract tests decode what the hook builds with the daemon's own decoder,
so the hand-written splice in ``hook.py`` cannot drift from ``protocol.Hook``.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gastown_client import codec, hook, hookoutcome, hooktrim, paths
from gastown_client.protocol import Hook

HOOK_PY = Path(hook.__file__).resolve()
FORBIDDEN = {
    "os",
    "msgspec",
    "json",
    "re",
    "anyio",
    "asyncio",
    "structlog",
    "argparse",
    "typing",
    "socket",
    "pathlib",
    "hashlib",
    "collections",
    "enum",
    "gastown_client",
}

SESSION_START = {
    "session_id": "0b9c2f4e-6a51-4d8e-9f0a-1c2d3e4f5a6b",
    "transcript_path": "/home/max/.claude/projects/-home-max-gt-gastown/0b9c2f4e.jsonl",
    "cwd": "/home/max/gt/gastown/crew/max",
    "hook_event_name": "SessionStart",
    "permission_mode": "default",
    "source": "startup",
    "model": "claude-sonnet-4",
}
POST_TOOL_USE = {
    "session_id": "0b9c2f4e-6a51-4d8e-9f0a-1c2d3e4f5a6b",
    "transcript_path": "/tmp/t.jsonl",
    "cwd": "/home/max/gt/gastown/crew/max",
    "hook_event_name": "PostToolUse",
    "tool_name": "Bash",
    "tool_input": {"command": 'git commit -m "fix: the \\"quoted\\" bug"'},
    "tool_use_id": "toolu_01",
    "tool_response": {
        "stdout": "[main 1a2b3c4] fix: ünïcödé 🚀\n 1 file changed\ttab\u0001",
        "stderr": "",
        "interrupted": False,
    },
}


def frame_for(payload: bytes, **overrides: object) -> bytes:
    args: dict[str, object] = {
        "env": {b"GT_ROLE": b"gastown/crew/max"},
        "cwd": b"/home/max/gt",
        "pid": 4242,
        "ppid": 4241,
        "at": 1732500000.123456,
    }
    args.update(overrides)
    return hook.build_frame(payload, **args)  # type: ignore[arg-type]


def decode(frame: bytes) -> Hook:
    assert frame.endswith(b"\n") and frame.count(b"\n") == 1, frame
    request = codec.decode_request(frame[:-1])
    assert isinstance(request, Hook)
    return request


# ---------------------------------------------------------------- contract


@pytest.mark.parametrize("document", [SESSION_START, POST_TOOL_USE, {}, [1, "two"], "text", 3])
@pytest.mark.parametrize("ensure_ascii", [True, False])
def test_compact_payload_reaches_the_daemon_byte_for_byte(
    document: object, ensure_ascii: bool
) -> None:
    payload = json.dumps(document, ensure_ascii=ensure_ascii, separators=(",", ":")).encode()
    request = decode(frame_for(payload))
    assert bytes(request.payload) == payload
    assert request.env == {"GT_ROLE": "gastown/crew/max"}
    assert request.cwd == "/home/max/gt"
    assert (request.pid, request.ppid, request.at) == (4242, 4241, 1732500000.123456)
    assert request.spooled_at is None
    assert request.id == 1


def test_spaced_payload_is_forwarded_untouched() -> None:
    payload = json.dumps(POST_TOOL_USE).encode()  # ", " and ": " separators
    assert bytes(decode(frame_for(payload)).payload) == payload


def test_pretty_printed_payload_stays_one_line_and_means_the_same() -> None:
    payload = json.dumps(POST_TOOL_USE, indent=2).encode().replace(b"\n", b"\r\n")
    request = decode(frame_for(payload))
    raw = bytes(request.payload)
    assert b"\n" not in raw and b"\r" not in raw
    assert len(raw) == len(payload)  # each CR/LF became one space
    assert msgspec.json.decode(raw) == POST_TOOL_USE


@pytest.mark.parametrize("payload", [b"", b"   ", b"\n", b"\r\n\t \n"])
def test_empty_stdin_becomes_null(payload: bytes) -> None:
    assert bytes(decode(frame_for(payload)).payload) == b"null"


def test_an_oversized_frame_is_trimmed_to_the_limit_and_says_so() -> None:
    big = dict(POST_TOOL_USE, tool_input={"command": "bd close gt-7 && cat big.log"})
    big["tool_response"] = {"stdout": "line of output\n" * 200_000, "stderr": "", "exitCode": 0}
    payload = json.dumps(big).encode()
    frame = frame_for(payload)
    assert len(frame) > hook.MAX_FRAME

    def rebuild(trimmed: bytes, cut: int) -> bytes:
        return frame_for(trimmed, trimmed=cut)

    fitted = hook.fitted(frame, payload, rebuild)
    assert len(fitted) - 1 <= hook.MAX_FRAME
    reader = codec.FrameReader()  # the daemon's default limit
    reader.feed(fitted)
    request = decode(reader.next_frame() + b"\n")  # type: ignore[operator]
    assert request.trimmed == len(payload) - len(bytes(request.payload)) + _marks(request)
    decoded = msgspec.json.decode(bytes(request.payload))
    assert decoded["tool_input"] == big["tool_input"]
    assert decoded["tool_response"]["exitCode"] == 0


def _marks(request: Hook) -> int:
    """Bytes the cut markers added back."""
    raw = bytes(request.payload)
    start = raw.find(b"[... ")
    return raw.find(b"...]", start) + 4 - start


def test_a_frame_within_the_limit_is_not_touched_and_has_no_trimmed_field() -> None:
    payload = json.dumps(POST_TOOL_USE).encode()
    frame = frame_for(payload)
    assert hook.fitted(frame, payload, lambda p, c: b"rebuilt") is frame
    assert b'"trimmed"' not in frame and decode(frame).trimmed == 0


@pytest.mark.parametrize("payload", [b"not json", b'{"a":', b"\x00\xff\xfe", b'{"a":1}{"b":2}'])
def test_garbage_stays_one_line_and_the_daemon_rejects_it(payload: bytes) -> None:
    frame = frame_for(payload)
    assert frame.count(b"\n") == 1
    with pytest.raises(codec.BadRequest):
        codec.decode_request(frame[:-1])


def test_spooled_frame_carries_spooled_at() -> None:
    frame = frame_for(json.dumps(SESSION_START).encode())
    line = hookoutcome.spooled(frame, 1732500001.5)
    request = decode(line)
    assert request.spooled_at == 1732500001.5
    assert request.at == 1732500000.123456
    assert msgspec.json.decode(bytes(request.payload)) == SESSION_START


def test_only_the_known_variables_are_forwarded_and_empty_ones_are_dropped() -> None:
    env = {key: b"v-" + key for key in hook.ENV_KEYS}
    env[b"GT_RIG"] = b""
    env[b"PATH"] = b"/usr/bin"
    env[b"ANTHROPIC_API_KEY"] = b"secret"
    request = decode(frame_for(b"{}", env=env))
    expected = {k.decode(): v.decode() for k, v in env.items() if k in hook.ENV_KEYS and v}
    assert request.env == expected
    assert "GT_RIG" not in request.env and "PATH" not in request.env


def test_an_env_value_too_long_to_be_an_identity_is_not_forwarded() -> None:
    """Ten values of 128 KiB (the most one variable holds) would leave no room for the payload."""
    env = {key: b"r" * (128 << 10) for key in hook.ENV_KEYS}
    env[b"GT_ROLE"] = b"r" * hook.MAX_ENV_VALUE
    frame = frame_for(json.dumps(POST_TOOL_USE).encode(), env=env)
    assert len(frame) < hook.MAX_FRAME // 4
    assert decode(frame).env == {"GT_ROLE": "r" * hook.MAX_ENV_VALUE}


def test_missing_cwd_is_null() -> None:
    assert decode(frame_for(b"{}", cwd=None)).cwd is None


# ---------------------------------------------------------------- escaping


@pytest.mark.parametrize(
    "text",
    [
        'say "hi"',
        "back\\slash\\\\",
        "tab\tnew\nline\rcr\x00nul\x1fus\x7fdel",
        "ünïcödé — 日本語 🚀",
        '\\"\\u0041',  # escape lookalikes stay literal
        "",
    ],
)
def test_env_and_cwd_escaping_round_trips(text: str) -> None:
    value = text.encode()
    request = decode(frame_for(b"{}", env={b"GT_ROLE": value}, cwd=value))
    assert request.cwd == text
    assert request.env == ({"GT_ROLE": text} if text else {})


def test_invalid_utf8_in_env_or_cwd_does_not_lose_the_request() -> None:
    raw = b"/home/max/caf\xe9/\xff"  # a Latin-1 directory name, as os.getcwdb() gives it
    request = decode(frame_for(b"{}", env={b"GT_ROLE": raw}, cwd=raw))
    assert request.cwd == "/home/max/caf\ufffd/\ufffd"
    assert request.env["GT_ROLE"] == request.cwd


@given(st.text())
def test_json_string_matches_a_real_json_decoder(text: str) -> None:
    encoded = hook.json_string(text.encode("utf-8"))
    assert msgspec.json.decode(encoded) == text
    assert json.loads(encoded) == text
    assert b"\n" not in encoded and b"\r" not in encoded


@given(st.binary(max_size=64))
def test_json_string_never_breaks_a_frame(value: bytes) -> None:
    request = decode(frame_for(b"{}", cwd=value))
    assert request.cwd == value.decode("utf-8", "replace")


# ---------------------------------------------------------------- replies


@pytest.mark.parametrize(
    ("reply", "context"),
    [
        (b'{"id":1,"ok":true,"result":{"handled":"session_start"}}', None),
        (b'{"id":1,"ok":true,"result":{"handled":"x","context":null}}', None),
        (b'{"id":1,"ok":true,"result":{"handled":"x","context":""}}', None),
        (
            b'{"id":1,"ok":true,"result":{"handled":"x",'
            b'"context":"a \\"b\\"\\n\\u00e9\\ud83d\\ude80"}}',
            'a "b"\n\u00e9\U0001f680',
        ),
        (b'{"id":1,"ok":false,"error":{"code":"internal","message":"\\"context\\":\\""}}', None),
        (b'{"id":1,"ok":false,"error":{"code":"x","message":"m"},"context":"no"}', None),
        (b'{"id":1,"ok":true,"result":["context"]}', None),
    ],
)
def test_context_of(reply: bytes, context: str | None) -> None:
    assert hookoutcome.context_of(reply) == context


# ---------------------------------------------------------------- stdin, stderr


def test_read_stdin_stops_when_stdin_idles_or_at_the_deadline_with_what_came() -> None:
    reader, writer = os.pipe()
    try:
        os.write(writer, b'{"a":')
        started = time.monotonic()
        assert hook.read_stdin(started + 5, reader) == (b'{"a":', "idle")
        assert hook.STDIN_IDLE_S <= time.monotonic() - started < 5
        os.write(writer, b"1")
        assert hook.read_stdin(time.monotonic() + 0.02, reader) == (b"1", "late")
        os.write(writer, b"}")
        os.close(writer)
        writer = -1
        assert hook.read_stdin(time.monotonic() + 5, reader) == (b"}", "end")
    finally:
        os.close(reader)
        if writer >= 0:
            os.close(writer)


def test_read_stdin_reads_on_while_a_slow_writer_keeps_writing() -> None:
    """Chunks 20 ms apart for twice the idle limit: a loaded machine is not a cut."""
    reader, writer = os.pipe()

    def trickle() -> None:
        for _ in range(round(2 * hook.STDIN_IDLE_S / 0.02)):
            time.sleep(0.02)
            os.write(writer, b"x")
        os.close(writer)

    thread = threading.Thread(target=trickle)
    thread.start()
    try:
        data, how = hook.read_stdin(time.monotonic() + 30, reader)
    finally:
        thread.join()
        os.close(reader)
    assert (data, how) == (b"x" * round(2 * hook.STDIN_IDLE_S / 0.02), "end")


def test_read_stdin_of_a_closed_fd_is_empty_and_ended() -> None:
    closed = 1021
    with pytest.raises(OSError, match="Bad file descriptor"):
        os.fstat(closed)
    assert hook.read_stdin(time.monotonic() + 5, closed) == (b"", "end")


def test_a_complaint_is_one_bounded_line_on_stderr(capfd: pytest.CaptureFixture[str]) -> None:
    hookoutcome.complain(b"two\nlines\r" + b"x" * 1000)
    err = capfd.readouterr().err
    assert err.startswith("gastown-hook: two lines ") and err.endswith("...\n")
    assert err.count("\n") == 1
    assert len(err) == len("gastown-hook: ") + hookoutcome.MAX_COMPLAINT + 1


# ---------------------------------------------------------------- paths


def environb(environ: dict[str, str]) -> dict[bytes, bytes]:
    """``environ`` as the hook sees it, with this process's HOME (``paths`` reads os.environ)."""
    as_bytes = {os.fsencode(k): os.fsencode(v) for k, v in environ.items()}
    as_bytes[b"HOME"] = os.fsencode(os.environ["HOME"])
    return as_bytes


def same_town(environ: dict[str, str], cwd: Path, home: Path) -> bytes:
    ours = hook.town_root(environb(environ), os.fsencode(cwd), os.fsencode(home))
    theirs = paths.find_town_root(environ=environ, cwd=cwd, home=home)
    assert ours == os.fsencode(theirs), (ours, theirs)
    return ours


def make_town(root: Path) -> Path:
    (root / "mayor").mkdir(parents=True)
    (root / "mayor" / "town.json").write_text("{}")
    return root


def test_town_root_rules_match_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    outer = make_town(tmp_path / "outer")
    inner = make_town(outer / "rigs" / "inner")
    deep = inner / "crew" / "max"
    deep.mkdir(parents=True)
    (tmp_path / "fake" / "mayor" / "town.json").mkdir(parents=True)  # a dir, not a file
    bare = tmp_path / "bare" / "rig"
    (tmp_path / "bare" / "mayor").mkdir(parents=True)  # a mayor/ dir without town.json
    (bare / "mayor").mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    home = tmp_path / "home"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(home))
    cases = [
        {"GT_TOWN_ROOT": str(outer)},
        {"GT_TOWN_ROOT": str(outer) + "//rigs/../"},
        {"GT_TOWN_ROOT": "relative/town"},
        {"GT_TOWN_ROOT": "~/gt-town"},
        {"GT_TOWN_ROOT": "", "GT_ROOT": str(inner)},
        {"GT_ROOT": "~"},
        {"GT_TOWN_ROOT": str(inner), "GT_ROOT": str(outer)},
        {},
    ]
    for environ in cases:
        same_town(environ, deep, home)
    assert same_town({}, deep, home) == os.fsencode(outer)  # the outermost town wins
    # Without town.json anywhere, the outermost ancestor with a mayor/ dir (as gt does).
    assert same_town({}, tmp_path / "fake", home) == os.fsencode(tmp_path / "fake")
    assert same_town({}, bare, home) == os.fsencode(tmp_path / "bare")
    assert same_town({}, inner / "mayor", home) == os.fsencode(outer)
    assert same_town({}, tmp_path / "elsewhere", home) == os.fsencode(home / "gt")
    assert same_town({}, Path("/"), home) == os.fsencode(home / "gt")
    assert same_town({"GT_TOWN_ROOT": "~/x"}, deep, home) == os.fsencode(home / "x")


def test_socket_rules_match_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    suffix_len = len("/.gastownd/gastownd.sock")
    towns = [
        Path("/tmp/gt-short"),
        tmp_path / ("x" * 150),
        # Right at the limit: the preferred path with its NUL fills sun_path exactly.
        Path("/tmp/" + "a" * (paths.SUN_PATH_MAX - 1 - suffix_len - len("/tmp/"))),
        Path("/tmp/" + "a" * (paths.SUN_PATH_MAX - suffix_len - len("/tmp/"))),
    ]
    overrides: list[dict[str, str]] = [
        {},
        {"GASTOWND_SOCKET": "/run/user/1000/gastownd.sock"},
        {"GASTOWND_SOCKET": "rel/sock"},
        {"GASTOWND_SOCKET": "~/g.sock"},
        {"GASTOWND_SOCKET": ""},
    ]
    kinds = set()
    for town in towns:
        for environ in overrides:
            ours = hook.socket_path(os.fsencode(town), environb(environ))
            theirs = paths.socket_path(town, environ)
            assert ours == os.fsencode(theirs), (town, environ)
            assert len(ours) < paths.SUN_PATH_MAX
            kinds.add(ours.startswith(b"/tmp/gastownd-"))
    assert kinds == {True, False}  # both the preferred path and the fallback were exercised
    assert hook.SUN_PATH_MAX == paths.SUN_PATH_MAX


PATH_PARTS = st.lists(st.sampled_from([b"", b".", b"..", b"a", b"bc", b"~", b"\xe9"]), max_size=6)


@given(PATH_PARTS, st.booleans(), st.sampled_from([b"", b"/", b"//"]))
def test_path_helpers_follow_os_path(parts: list[bytes], rooted: bool, tail: bytes) -> None:
    path = (b"/" if rooted else b"") + b"/".join(parts) + tail
    assert hook.normpath(path) == os.path.normpath(path)
    assert hook.dirname(path) == os.path.dirname(path)
    assert hook.abspath(path) == os.path.abspath(path)
    assert hook.join(path, b"x", b"y") == os.path.join(path, b"x", b"y")
    assert hook.join(path, b"/abs") == os.path.join(path, b"/abs")


def test_expanduser_and_isfile_follow_os_path(tmp_path: Path) -> None:
    environ = {b"HOME": os.fsencode(os.environ["HOME"])}
    for path in (b"~", b"~/", b"~/x/y", b"~root/x", b"~no-such-user-zz/x", b"x/~", b"/a"):
        assert hook.expanduser(path, environ) == os.path.expanduser(path), path
    assert hook.expanduser(b"~/x", {b"HOME": b"/"}) == b"/x"
    (tmp_path / "file").write_text("")
    (tmp_path / "dir").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "file")
    for name in ("file", "dir", "link", "missing", "file/below"):
        path = os.fsencode(tmp_path / name)
        assert hook.isfile(path) == os.path.isfile(path), name
        assert hook.isdir(path) == os.path.isdir(path), name


def test_spool_path_is_in_the_spool_dir() -> None:
    town = Path("/tmp/gt-x")
    expected = paths.spool_dir(town) / f"hook-{os.getuid()}.jsonl"
    assert hook.spool_path(os.fsencode(town)) == os.fsencode(expected)


# ---------------------------------------------------------------- imports


def imported_by(
    args: list[str], env: dict[str, str], stdin: bytes = b'{"hook_event_name":"Stop"}'
) -> set[str]:
    result = subprocess.run(
        [sys.executable, "-X", "importtime", *args],
        input=stdin,
        capture_output=True,
        env=env,
        timeout=30,
        check=True,
    )
    assert result.stdout == b""
    lines = result.stderr.decode().splitlines()
    rows = [line.split("|")[-1] for line in lines if line.startswith("import time:")]
    return {row.strip() for row in rows[1:]}  # first row is the header


def test_script_imports_only_cheap_stdlib(tmp_path: Path) -> None:
    # No daemon and no town: the run goes through connect, fail, spool attempt.
    env = {"GT_TOWN_ROOT": str(tmp_path / "no-town"), "PATH": "/usr/bin:/bin"}
    modules = imported_by(["-I", "-S", str(HOOK_PY)], env)
    assert "_socket" in modules
    assert "os" not in modules  # posix is built in and already loaded
    assert not modules & FORBIDDEN, sorted(modules & FORBIDDEN)
    assert not (tmp_path / "no-town").exists()


def test_a_call_answered_plainly_loads_only_the_hook_client(tmp_path: Path) -> None:
    """The spool, the notes and the reply's context live in ``hookoutcome``, loaded only when
    a call needs one of them: the common call pays for none of it."""
    path = tmp_path / "d.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(1)

    def answer() -> None:
        conn, _ = server.accept()
        with conn:
            while not conn.recv(1 << 20).endswith(b"\n"):
                pass
            conn.sendall(b'{"id":1,"ok":true,"result":{"handled":"Stop"}}\n')

    thread = threading.Thread(target=answer, daemon=True)
    thread.start()
    env = {"GASTOWND_SOCKET": str(path), "GT_TOWN_ROOT": str(tmp_path), "PATH": "/usr/bin:/bin"}
    modules = imported_by(["-I", "-S", str(HOOK_PY)], env)
    thread.join(10)
    server.close()
    assert "hookclient" in modules
    assert "hookoutcome" not in modules
    assert not (tmp_path / ".gastownd").exists()  # nothing spooled


def test_cutting_a_deep_or_huge_payload_imports_only_builtins(tmp_path: Path) -> None:
    env = {"GT_TOWN_ROOT": str(tmp_path / "no-town"), "PATH": "/usr/bin:/bin"}
    deep = b'{"tool_input":{},"r":' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    modules = imported_by(["-I", "-S", str(HOOK_PY)], env, deep)
    assert "hooktrim" in modules
    ours = {"_socket", "hookclient", "hookoutcome", "hooktrim", "_bisect", "_operator", "itertools"}
    builtin = {name for name in modules if name in sys.builtin_module_names}
    assert modules <= ours | builtin | imported_by(["-I", "-S", "-c", "pass"], env), sorted(modules)
    assert hooktrim.MAX_DEPTH == hook.MAX_DEPTH


def test_module_import_loads_nothing_heavy() -> None:
    code = (
        "import sys\n"
        f"sys.path.insert(0, {str(HOOK_PY.parent)!r})\n"
        "import hook\n"
        "print(' '.join(sorted(sys.modules)))\n"
    )
    result = subprocess.run(
        [sys.executable, "-I", "-S", "-c", code],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    loaded = set(result.stdout.split())
    assert "hook" in loaded
    assert not loaded & FORBIDDEN, sorted(loaded & FORBIDDEN)
