"""What the hook does when a call is not simply delivered: spool it, note it, read a context.

``hookclient`` loads this module only then (the common call, delivered and answered
without a context, never compiles or loads it), so it imports nothing of the hook's
own and only what the standard library has built in; ``json`` only for a context.

Delivery rules:

- The request never reached the daemon (no socket, refused, backlog full,
  the send failed or was cut short, the daemon closed without a reply, or it
  answered ``busy``/``shutting_down`` before reading): the frame, with
  ``spooled_at``, is appended as one ``write`` to
  ``<town>/.gastownd/spool/hook-<uid>.jsonl``; the daemon ingests spooled
  lines in order, exactly once.
- The request was sent but no reply came before the deadline: nothing is
  spooled. The daemon holds the request and may already have applied it, so
  from the hook's side delivery is at-most-once; spooling here would risk a
  double count on every slow turn.

Nothing is lost silently: a call cut whole-value-wise, one that could not be
sent at all, one the daemon refused (an error reply) and one answered with
something unreadable each leave a one-line note in
``<town>/.gastownd/spool/note-<uid>.jsonl``, which the daemon logs
(``hook_call_cut``, ``hook_call_lost``; ``gastownd.spool``).

What the hook cannot leave where the daemon reads it (a call that could not be
spooled, a note that could not be written) it says in one line on stderr
(``complain``). Claude Code gives a hook's stderr to the model only on exit
status 2, so the line disturbs no agent; it is for the user (Claude Code's
verbose view, whatever captures stderr; run by hand, the hook says it at once).
An ``--async`` call with no daemon spools before it forks; a detached one has
no stderr left to say it on: its record is the note, when the spool directory
takes one. A town that does not exist is not complained about: hooks are
installed user-wide, and a session outside Gas Town has nothing to lose.
"""

import posix
import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

# A complaint is one line of at most this many bytes, past its ``gastown-hook: ``.
MAX_COMPLAINT = 400
# What it quotes (a daemon's garbage, say) cannot move a terminal's cursor or break the line.
_CONTROLS_TO_SPACES = bytes.maketrans(bytes(range(0x20)) + b"\x7f", b" " * 0x21)


def append(path: bytes, line: bytes) -> None:
    """Append ``line`` to ``path``, a file of ``<town>/.gastownd/spool/``, in one ``write``,
    creating ``.gastownd`` and ``spool`` (0700) when missing, never the town.

    Raises ``OSError`` when the line is not all there: the file is not a
    regular file (a FIFO would block the open, and takes nothing the daemon
    reads), or the write fell short (a full disk); the torn line then gets its
    newline when it can (else the daemon finds the next call's frame after it).
    """
    spool_dir = path.rpartition(b"/")[0]
    for directory in (spool_dir.rpartition(b"/")[0], spool_dir):
        try:  # noqa: SIM105 - contextlib would cost an import
            posix.mkdir(directory, 0o700)
        except FileExistsError:
            pass
    flags = posix.O_WRONLY | posix.O_APPEND | posix.O_CREAT | posix.O_CLOEXEC | posix.O_NOFOLLOW
    fd = posix.open(path, flags | posix.O_NONBLOCK, 0o600)
    try:
        if posix.fstat(fd).st_mode & 0o170000 != 0o100000:
            raise OSError(f"not a regular file: {path!r}")
        written = posix.write(fd, line)
        if written < len(line):
            try:  # noqa: SIM105 - contextlib would cost an import
                posix.write(fd, b"\n")
            except OSError:
                pass  # the daemon drops the torn line all the same
            raise OSError(f"short write, {written} of {len(line)} bytes (disk full?): {path!r}")
    finally:
        posix.close(fd)


def leave_note(path: bytes, line: bytes) -> OSError | None:
    """Append ``line`` to this uid's note file ``path``, for the daemon to log;
    the error when it could not be written (the caller says it on stderr)."""
    try:
        append(path, line)
    except OSError as error:
        return error
    return None


def spooled(frame: bytes, spooled_at: float) -> bytes:
    """``frame`` with ``"spooled_at"`` spliced in before its closing brace."""
    body = frame.rstrip(b"\n")
    return body[:-1] + b',"spooled_at":%s}\n' % repr(spooled_at).encode("ascii")


def settle(
    reply: bytes | None,
    spool_file: bytes,
    frame: bytes,
    sock: bytes,
    note: "Callable[..., None]",
) -> None:
    """A call not answered plainly: spool it (``reply`` None: the daemon did not
    take it), or note why it went wrong (an error or an unreadable reply)."""
    if reply is None:
        try:
            append(spool_file, spooled(frame, time.time()))
        except OSError as error:
            note(b"not taken by %s and not spooled: %s" % (sock, describe(error)), True, loud=True)
    elif not reply.endswith(b"\n") or b'"ok":' not in reply:
        # Something took the call and answered what no daemon says (or was cut off).
        note(b"unreadable reply from %s: %s" % (sock, reply[:80]), True, loud=True)
    else:
        code = field(reply, b"code")
        note(b"refused: " + (code or b"error") + b": " + field(reply, b"message"), True)


def note_line(
    reason: bytes,
    lost: bool,
    payload: bytes,
    size: int,
    at: float,
    pid: int,
    quote: "Callable[[bytes], bytes]",
) -> bytes:
    """One line for the daemon's log: why a call was cut or lost, and whose it was.
    ``quote`` is the hook's ``json_string``."""
    return (
        b'{"lost":%s,"reason":%s,"hook_event":%s,"session_id":%s,"bytes":%d,"at":%s,"pid":%d}\n'
        % (
            b"true" if lost else b"false",
            quote(reason[:200]),
            quote(field(payload, b"hook_event_name")),
            quote(field(payload, b"session_id")),
            size,
            repr(at).encode("ascii"),
            pid,
        )
    )


def tell(
    note_file: bytes,
    line: bytes,
    reason: bytes,
    lost: bool,
    loud: bool,
    payload: bytes,
    in_a_town: "Callable[[], bool]",
) -> None:
    """Leave the note ``line`` for the daemon, and say ``reason`` on stderr when
    ``loud`` or when the note could not be written, unless there is no town at all
    (hooks are installed user-wide: outside Gas Town there is no call to lose)."""
    failed = leave_note(note_file, line)
    if failed is None and not loud:
        return
    if failed is not None and not in_a_town():
        return
    after = b" (noted for the daemon)"
    if failed is not None:
        after = b" (no note for the daemon: " + describe(failed) + b")"
    event = field(payload, b"hook_event_name") or b"hook"
    complain(event + (b" call lost: " if lost else b" call cut: ") + reason + after)


def print_context(reply: bytes) -> None:
    """Print the context of an ok reply, if any, for Claude (stdout)."""
    try:
        context = context_of(reply)
    except (ValueError, RecursionError) as error:  # the call was taken: only the context is lost
        complain(b"context not readable: " + describe(error))
        return
    if not context:
        return
    data = context.encode("utf-8", "replace")
    data += b"" if data.endswith(b"\n") else b"\n"
    try:
        while data:
            data = data[posix.write(1, data) :]
    except OSError as error:  # Claude stopped reading: a broken pipe, say
        complain(b"context not printed: " + describe(error))


def describe(error: BaseException) -> bytes:
    """``error`` in a few words: its class and message (its file name quoted once)."""
    return (type(error).__name__ + ": " + str(error)).encode("utf-8", "replace")


def complain(message: bytes) -> None:
    """One line on stderr, ``gastown-hook: <message>``; a stderr that is gone is ignored."""
    one_line = message.translate(_CONTROLS_TO_SPACES)
    if len(one_line) > MAX_COMPLAINT:
        one_line = one_line[: MAX_COMPLAINT - 3] + b"..."
    try:  # noqa: SIM105 - contextlib would cost an import
        posix.write(2, b"gastown-hook: " + one_line + b"\n")
    except OSError:
        pass  # closed or broken stderr: nobody is listening


def field(payload: bytes, key: bytes) -> bytes:
    """The short string value of ``"key":`` in ``payload``, found without parsing (or b"")."""
    at = payload.find(b'"' + key + b'"', 0, 1 << 16)
    if at < 0:
        return b""
    opening = payload.find(b'"', at + len(key) + 2, at + len(key) + 8)
    closing = payload.find(b'"', opening + 1, opening + 130) if opening >= 0 else -1
    return payload[opening + 1 : closing] if closing > 0 else b""


def context_of(reply: bytes) -> str | None:
    """The ``context`` of an ok ``HookResult`` reply, if any."""
    import json  # only when the daemon injects context

    message = json.loads(reply)
    if not isinstance(message, dict) or message.get("ok") is not True:
        return None
    result = message.get("result")
    context = result.get("context") if isinstance(result, dict) else None
    return context if isinstance(context, str) and context else None
