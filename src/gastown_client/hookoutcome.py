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
sent at all, and one the daemon refused (an error reply) each leave a one-line
note in ``<town>/.gastownd/spool/note-<uid>.jsonl``, which the daemon logs
(``hook_call_cut``, ``hook_call_lost``; ``gastownd.spool``).
"""

import posix


def append(path: bytes, line: bytes) -> None:
    """Append ``line`` to ``path``, a file of ``<town>/.gastownd/spool/``, in one ``write``,
    creating ``.gastownd`` and ``spool`` (0700) when missing, never the town."""
    spool_dir = path.rpartition(b"/")[0]
    for directory in (spool_dir.rpartition(b"/")[0], spool_dir):
        try:  # noqa: SIM105 - contextlib would cost an import
            posix.mkdir(directory, 0o700)
        except FileExistsError:
            pass
    flags = posix.O_WRONLY | posix.O_APPEND | posix.O_CREAT | posix.O_CLOEXEC | posix.O_NOFOLLOW
    fd = posix.open(path, flags, 0o600)
    try:
        posix.write(fd, line)
    finally:
        posix.close(fd)


def leave_note(path: bytes, line: bytes) -> None:
    """Append ``line`` to this uid's note file ``path``, for the daemon to log."""
    try:  # noqa: SIM105 - contextlib would cost an import
        append(path, line)
    except OSError:
        pass  # no town, or an unwritable one: nobody could read the note


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
