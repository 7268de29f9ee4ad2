"""The Claude Code hook client proper (``hook.py`` is how it is started).

Claude Code runs a hook on every agent turn, so this module is written to
cost less than a bare ``python3 -c pass``. ``install-hooks`` calls the
launcher ``hook.py`` as a script (``<python> -I -S .../gastown_client/hook.py``),
which imports this module from its own directory, so that its bytecode comes
from the cache instead of being compiled at every run: no ``site``, no
package, and at import only ``sys``, ``time``, ``posix`` and ``_signal`` (built in and
already loaded at startup) plus ``_socket`` (``socket`` drags in ``enum`` and
``selectors``, ``json`` drags in ``re``, ``os`` costs ~1.6 ms under ``-S``).
The ``gastown-hook`` console script and ``python -m gastown_client.hook``
run the same code.

What it does: read Claude's JSON from stdin (until it is closed, idle or late: see
``read_stdin``; a terminal is not read), splice it *untouched* (raw
newlines become spaces, which keeps valid JSON valid and the frame on one
line; empty input becomes ``null``) into one ``hook`` request
(``gastown_client.protocol.Hook``), send it under a deadline, print the
reply's ``context`` if there is one, exit 0. The daemon parses and validates
the payload; whatever Claude sent, the hook itself never fails.

A payload too long for a frame (``MAX_FRAME``, the daemon's default: its configuration
cannot be read cheaply; a ``bd close X && cat big.log``), deeper than ``MAX_DEPTH`` or longer
than ``MAX_STDIN`` is not dropped: ``hooktrim``, loaded only then, cuts it to fit (see there
how), and the request says how many bytes were cut (``trimmed``).

A call the daemon did not take is spooled, one refused or cut of what attribution reads
leaves a note: ``hookoutcome``, loaded only then, says how and when, and what is said on
stderr when neither can be written.

Path rules mirror ``gastown_client.paths`` (which this file cannot import:
``pathlib`` loads ``re``); ``tests/unit/test_hook_client.py`` pins them equal.
"""

import _socket
import posix
import sys
import time

# No ``from __future__ import annotations`` and no ``typing``: each costs an import.
# Mypy honours a local ``TYPE_CHECKING``; the annotations naming ``Mapping`` are strings.
TYPE_CHECKING = False
if TYPE_CHECKING:
    import signal as _signal  # typed: ``signal`` re-exports ``_signal``'s functions
    from collections.abc import Callable, Mapping
    from types import ModuleType
else:
    import _signal  # built in and loaded at start-up, unlike ``signal`` (``enum``)

# The Gas Town and Claude variables forwarded in ``env``, when set, non-empty and not longer
# than any identity or session id (ten of 128 KiB would crowd the payload out of a frame).
MAX_ENV_VALUE = 4096
ENV_KEYS: tuple[bytes, ...] = (
    b"GT_ROLE",
    b"BD_ACTOR",
    b"GT_RIG",
    b"GT_SESSION",
    b"GT_TOWN_ROOT",
    b"GT_CREW",
    b"GT_POLECAT",
    b"CLAUDE_CODE_SESSION_ID",
    b"GT_SESSION_ID",
    b"CLAUDE_SESSION_ID",
)
# Read at most this much of stdin: what follows is never read, and the values
# it would have completed are cut (a frame holds 1 MiB anyway).
MAX_STDIN = 8 << 20
# A payload with fewer brackets than this cannot be too deep: no need to look.
MAX_DEPTH = 128
# The daemon's default ``server.max_frame_bytes``: longer frames are trimmed to it.
MAX_FRAME = 1 << 20
# Room a trimmed frame leaves for what follows the payload: ``trimmed``, ``spooled_at``.
TRIM_RESERVE = 64
MAX_REPLY = 1 << 16
CONNECT_TIMEOUT_S = 0.1
# Measured from the hook's start: the whole run stays well under 300 ms.
REPLY_DEADLINE_S = 0.2
# Stdin open with nothing new for ``STDIN_IDLE_S`` (a wrapper that never closes it), or at
# the end of the reply budget (a trickle), is cut short; a slow writer is read on till then.
STDIN_IDLE_S = 0.1
STDIN_DEADLINE_S = REPLY_DEADLINE_S
# ``--async`` runs detached; nobody waits, so it may listen a little longer.
ASYNC_REPLY_DEADLINE_S = 1.0
# Replies that mean "not read, try later": the request goes to the spool.
RETRY_CODES = (b'"code":"busy"', b'"code":"shutting_down"')

PRIVATE_DIR_NAME = b".gastownd"
SOCKET_NAME = b"gastownd.sock"
TOWN_MARKER = b"mayor/town.json"
# sun_path holds 108 bytes on Linux and 104 on the BSDs and macOS, NUL included.
SUN_PATH_MAX = 108 if sys.platform.startswith("linux") else 104

_JSON_SPECIAL = bytes(range(0x20)) + b'"\\'


# ---------------------------------------------------------------- paths
#
# ``os`` costs ~1.6 ms to import under ``-S`` (``stat``, ``posixpath``, ``_collections_abc``)
# while ``posix`` is built in and loaded, so the few ``os.path`` rules needed are written out
# here, on bytes, following ``posixpath`` (net of their own compile time: ~0.65 ms saved per
# call). The unit tests hold them equal to ``os.path`` and ``paths``.


def join(head: bytes, *tails: bytes) -> bytes:
    path = head
    for tail in tails:
        if tail.startswith(b"/") or not path:
            path = tail
        elif path.endswith(b"/"):
            path += tail
        else:
            path += b"/" + tail
    return path


def dirname(path: bytes) -> bytes:
    head = path[: path.rfind(b"/") + 1]
    if head and head != b"/" * len(head):
        head = head.rstrip(b"/")
    return head


def normpath(path: bytes) -> bytes:
    if not path:
        return b"."
    initial = 0
    if path.startswith(b"/"):
        # POSIX leaves the meaning of exactly two leading slashes open: keep them.
        initial = 2 if path.startswith(b"//") and not path.startswith(b"///") else 1
    parts: list[bytes] = []
    for part in path.split(b"/"):
        if part in (b"", b"."):
            continue
        if part != b".." or (not initial and not parts) or (parts and parts[-1] == b".."):
            parts.append(part)
        elif parts:
            parts.pop()
    return b"/" * initial + b"/".join(parts) or b"."


def abspath(path: bytes) -> bytes:
    return normpath(path if path.startswith(b"/") else join(posix.getcwdb(), path))


def expanduser(path: bytes, environ: "Mapping[bytes, bytes]") -> bytes:
    if not path.startswith(b"~"):
        return path
    end = path.find(b"/", 1)
    end = len(path) if end < 0 else end
    home = environ.get(b"HOME") if end == 1 else None
    if home is None:
        import pwd  # built in; only for ``~user`` or an unset HOME

        try:
            name = path[1:end].decode(sys.getfilesystemencoding(), "surrogateescape")
            entry = pwd.getpwuid(posix.getuid()) if end == 1 else pwd.getpwnam(name)
        except KeyError:
            return path
        home = entry.pw_dir.encode(sys.getfilesystemencoding(), "surrogateescape")
    return home.rstrip(b"/") + path[end:] or b"/"


def _is_a(path: bytes, kind: int) -> bool:
    try:
        return posix.stat(path).st_mode & 0o170000 == kind
    except (OSError, ValueError):
        return False


def isfile(path: bytes) -> bool:
    return _is_a(path, 0o100000)


def isdir(path: bytes) -> bool:
    return _is_a(path, 0o040000)


def town_root(
    environ: "Mapping[bytes, bytes]", cwd: bytes | None, home: bytes | None = None
) -> bytes:
    """``GT_TOWN_ROOT`` (or ``GT_ROOT``), else the outermost ancestor of
    ``cwd`` holding ``mayor/town.json``, else the outermost one holding a
    ``mayor/`` directory (as ``gt``), else ``~/gt``; always absolute."""
    chosen = environ.get(b"GT_TOWN_ROOT") or environ.get(b"GT_ROOT")
    if chosen:
        return abspath(expanduser(chosen, environ))
    with_marker = with_mayor = None
    if cwd is not None:
        candidate = cwd
        while True:
            if isfile(join(candidate, TOWN_MARKER)):
                with_marker = candidate
            elif isdir(join(candidate, b"mayor")):
                with_mayor = candidate
            parent = dirname(candidate)
            if parent == candidate:
                break
            candidate = parent
    found = with_marker or with_mayor
    if found is None:
        found = join(home if home is not None else expanduser(b"~", environ), b"gt")
    return abspath(found)


def socket_path(town: bytes, environ: "Mapping[bytes, bytes]") -> bytes:
    """``GASTOWND_SOCKET``, else ``<town>/.gastownd/gastownd.sock`` when it
    fits in ``sun_path``, else ``/tmp/gastownd-<uid>/<sha256(realpath)[:16]>.sock``."""
    override = environ.get(b"GASTOWND_SOCKET")
    if override:
        return abspath(expanduser(override, environ))
    preferred = join(town, PRIVATE_DIR_NAME, SOCKET_NAME)
    if len(preferred) < SUN_PATH_MAX:
        return preferred
    import hashlib  # rare: only for towns too deep for sun_path
    import os.path

    digest = hashlib.sha256(os.path.realpath(town)).hexdigest()[:16]
    return b"/tmp/gastownd-%d/%s.sock" % (posix.getuid(), digest.encode())


def spool_path(town: bytes) -> bytes:
    return join(town, PRIVATE_DIR_NAME, b"spool", b"hook-%d.jsonl" % posix.getuid())


def note_path(town: bytes) -> bytes:
    return join(town, PRIVATE_DIR_NAME, b"spool", b"note-%d.jsonl" % posix.getuid())


# ---------------------------------------------------------------- the frame


def json_string(value: bytes) -> bytes:
    """``value`` as a JSON string literal. Invalid UTF-8 becomes U+FFFD."""
    try:
        value.decode("utf-8")
    except UnicodeDecodeError:
        value = value.decode("utf-8", "replace").encode("utf-8")
    if len(value.translate(None, _JSON_SPECIAL)) == len(value):
        return b'"' + value + b'"'
    out = bytearray(b'"')
    # Bytes of a multi-byte UTF-8 sequence are all >= 0x80: escaping per byte is safe.
    for byte in value:
        if byte == 0x22:
            out += b'\\"'
        elif byte == 0x5C:
            out += b"\\\\"
        elif byte < 0x20:
            out += b"\\u%04x" % byte
        else:
            out.append(byte)
    out += b'"'
    return bytes(out)


def normalize_payload(raw: bytes) -> bytes:
    """Claude's bytes, kept on one line: raw CR/LF (never inside a valid JSON
    string) become spaces; nothing at all becomes ``null``."""
    one_line = raw.replace(b"\n", b" ").replace(b"\r", b" ")
    return one_line if one_line.strip() else b"null"


def build_frame(
    payload: bytes,
    *,
    env: "Mapping[bytes, bytes]",
    cwd: bytes | None,
    pid: int,
    ppid: int,
    at: float,
    trimmed: int = 0,
) -> bytes:
    """One ``hook`` request line; ``payload`` is spliced in as it is."""
    fields = [
        b'"' + key + b'":' + json_string(value)
        for key in ENV_KEYS
        if (value := env.get(key)) and len(value) <= MAX_ENV_VALUE
    ]
    return b"".join(
        (
            b'{"op":"hook","id":1,"payload":',
            normalize_payload(payload),
            b',"env":{',
            b",".join(fields),
            b'},"cwd":',
            b"null" if cwd is None else json_string(cwd),
            b',"pid":%d,"ppid":%d,"at":%s' % (pid, ppid, repr(at).encode("ascii")),
            b',"trimmed":%d}\n' % trimmed if trimmed else b"}\n",
        )
    )


def fits(frame: bytes, payload: bytes, complete: bool) -> bool:
    """Whether ``frame`` can go as it is, with nothing to cut (``fitted`` is then free)."""
    depth = payload.count(b"{") + payload.count(b"[")
    return complete and len(frame) - 1 <= MAX_FRAME and depth <= MAX_DEPTH


def fitted(
    frame: bytes,
    payload: bytes,
    rebuild: "Callable[[bytes, int], bytes]",
    complete: bool = True,
    note: "Callable[[bytes, bool], None] | None" = None,
) -> bytes | None:
    """``frame``, or one rebuilt with its payload cut to be sendable, or None
    when nothing can be sent. ``complete`` is False when stdin was longer
    than ``MAX_STDIN``; ``note`` is told why a call lost more than long strings."""
    if fits(frame, payload, complete):
        return frame
    if __package__:
        from gastown_client import hooktrim
    else:  # imported by hook.py run as a script, which put this directory on sys.path
        import hooktrim  # type: ignore[import-not-found,no-redef]
    budget = MAX_FRAME - (len(frame) - 1 - len(payload)) - TRIM_RESERVE
    trimmed, cut, why = hooktrim.fit(payload, budget, complete=complete)
    if why is not None and note is not None:
        note(why, not trimmed)
    if not trimmed:
        return None
    return rebuild(trimmed, cut) if cut else frame


# ---------------------------------------------------------------- I/O


def read_stdin(deadline: float, fd: int = 0, cap: int = MAX_STDIN + 1) -> tuple[bytes, str]:
    """Up to ``cap`` bytes of ``fd`` and how reading ended: ``"end"`` (or unreadable), ``"idle"``
    (open, nothing new for ``STDIN_IDLE_S``), ``"late"`` (open at ``deadline``, monotonic). A
    ``SIGALRM`` re-armed per chunk ends a wait: ``_signal`` is built in and loaded, ``select``
    a library (0.15 ms), ``O_NONBLOCK`` a sleep loop changing a file others share."""
    chunks: list[bytes] = []
    size = 0
    ended = False
    how = "end"
    previous = _signal.signal(_signal.SIGALRM, _stdin_deadline_passed)
    _signal.pthread_sigmask(_signal.SIG_UNBLOCK, (_signal.SIGALRM,))  # an inherited mask
    try:
        try:
            while size < cap:
                wait = min(STDIN_IDLE_S, deadline - time.monotonic())
                _signal.setitimer(_signal.ITIMER_REAL, max(wait, 1e-6))
                chunk = posix.read(fd, min(65536, cap - size))
                ended = not chunk
                if ended:
                    break
                chunks.append(chunk)
                size += len(chunk)
        finally:  # each alarm is one-shot and ends the loop: once disarmed, none can follow
            _signal.setitimer(_signal.ITIMER_REAL, 0)
            _signal.signal(_signal.SIGALRM, previous)
    except TimeoutError:  # the alarm (an OSError too: caught first), maybe just after the end
        how = "end" if ended else "late" if time.monotonic() >= deadline else "idle"
    except OSError:
        pass  # closed or odd stdin: forward what was read
    return b"".join(chunks), how


def _stdin_deadline_passed(signum: int, frame: object) -> None:
    raise TimeoutError


def connect(path: bytes, deadline: float) -> "_socket.socket | None":
    """A connection to the daemon's socket ``path``, or None: nobody took it in time."""
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM | _socket.SOCK_CLOEXEC)
    try:
        sock.settimeout(max(0.001, min(CONNECT_TIMEOUT_S, deadline - time.monotonic())))
        sock.connect(path)
    except OSError:  # includes TimeoutError
        sock.close()
        return None
    return sock


def deliver(frame: bytes, sock: "_socket.socket | None", deadline: float) -> bytes | None:
    """Send ``frame`` on ``sock`` (from ``connect``) and close it; return the reply
    line (with its newline; without one when cut off or too long), ``b""`` when
    none came by ``deadline`` (monotonic), or None when the daemon did not take
    the request (the caller spools it)."""
    if sock is None:
        return None
    try:
        try:
            sock.settimeout(max(0.001, deadline - time.monotonic()))
            sock.sendall(frame)
        except OSError:  # includes TimeoutError: not (fully) sent
            return None
        reply = b""
        try:
            while b"\n" not in reply and len(reply) < MAX_REPLY:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return b""
                sock.settimeout(remaining)
                chunk = sock.recv(MAX_REPLY)
                if not chunk:
                    break
                reply += chunk
        except TimeoutError:
            return b""
        except OSError:
            pass  # reset: judged like a close below
        line = reply[: reply.find(b"\n") + 1 or None]
        if not line.strip():
            return None  # closed without a word: the daemon never read it
        if b'"ok":false' in line and any(code in line for code in RETRY_CODES):
            return None
        return line
    finally:
        sock.close()


def outcome() -> "ModuleType":
    """``hookoutcome``, loaded on first use: a call delivered and answered plainly never is."""
    if __package__:
        from gastown_client import hookoutcome
    else:  # imported by hook.py run as a script, which put this directory on sys.path
        import hookoutcome  # type: ignore[import-not-found,no-redef]
    return hookoutcome


def _detach() -> bool:
    """Fork for ``--async``: True in the child, which carries on detached; the parent exits
    at once. False when forking failed (run in place)."""
    try:
        pid = posix.fork()
    except OSError:
        return False
    if pid > 0:
        posix._exit(0)
    posix.setsid()
    null = posix.open(b"/dev/null", posix.O_RDWR)  # Claude waits for EOF on stdout/stderr
    for fd in (0, 1, 2):
        posix.dup2(null, fd)
    if null > 2:
        posix.close(null)
    return True


def main(argv: list[str] | None = None) -> int:
    """Run one hook call; always returns 0."""
    try:
        started = time.monotonic()
        args = sys.argv[1:] if argv is None else argv
        detached = "--async" in args
        if posix.isatty(0):  # run by hand: nobody will type the payload and close stdin
            outcome().complain(b"stdin is a terminal: nothing sent (Claude Code pipes each call)")
            return 0
        environ = posix.environ
        try:
            cwd: bytes | None = posix.getcwdb()
        except OSError:
            cwd = None
        raw, how = read_stdin(started + STDIN_DEADLINE_S)  # before forking: ours
        complete = len(raw) <= MAX_STDIN and how == "end"
        payload = raw[:MAX_STDIN]
        pid, ppid, at = posix.getpid(), posix.getppid(), time.time()

        def rebuild(payload: bytes, trimmed: int) -> bytes:
            return build_frame(
                payload, env=environ, cwd=cwd, pid=pid, ppid=ppid, at=at, trimmed=trimmed
            )

        frame = rebuild(payload, 0)
        town = town_root(environ, cwd)
        sock = socket_path(town, environ)
        conn = connect(sock, started + REPLY_DEADLINE_S)

        def send_or_spool(frame: bytes, deadline: float, speak: bool) -> None:
            reply = deliver(frame, conn, deadline)
            if reply is None or (reply and not (reply.endswith(b"\n") and b'"ok":true' in reply)):
                outcome().settle(reply, spool_path(town), frame, sock, note)
            elif speak and b'"context":"' in reply:  # answered (or late: at most once, b"")
                outcome().print_context(reply)

        def note(reason: bytes, lost: bool, loud: bool = False) -> None:
            """Leave a note for the daemon; say it on stderr too when ``loud``."""
            if how == "idle":
                reason += b" (stdin left open, idle for %d ms)" % round(STDIN_IDLE_S * 1000)
            line = outcome().note_line(reason, lost, payload, len(raw), at, pid, json_string)
            outcome().tell(note_path(town), line, reason, lost, loud, payload, lambda: isdir(town))

        # With no daemon, an --async call with nothing to cut is spooled in place (no
        # fork): a spool that cannot take it is then said on a stderr Claude still reads.
        if detached and (conn is not None or not fits(frame, payload, complete)) and _detach():
            try:
                # Trimming a big payload takes a while: the detached child does it.
                sendable = fitted(frame, payload, rebuild, complete, note)
                if sendable is not None:
                    send_or_spool(sendable, time.monotonic() + ASYNC_REPLY_DEADLINE_S, False)
            finally:
                posix._exit(0)
        sendable = fitted(frame, payload, rebuild, complete, note)
        if sendable is not None:
            send_or_spool(sendable, started + REPLY_DEADLINE_S, not detached)
    except BaseException as error:  # fail open: never fail the agent, nor in silence
        try:  # noqa: SIM105 - contextlib would cost an import
            outcome().complain(b"failed, the call may be lost: " + outcome().describe(error))
        except BaseException:
            pass  # not even stderr is left to say it on
    return 0
