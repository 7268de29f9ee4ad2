"""Which Beads issues an agent's tool call changed, and how (Gas Town reference, section 7).

Two ways in, both seen by the ``PostToolUse`` hook:

- the ``bd`` CLI in a Bash command: :func:`bd_changes` takes one simple command
  (words from :mod:`gastownd.core.command_words`) and, for the verbs that change an
  issue, the ids it changed. Global flags may come before the verb (value
  flags consume their value, ``--flag=value`` too); ids of ``create`` and
  ``q`` come from the command's output (``✓ Created issue: <id>``, a JSON
  object with ``id`` under ``--json``, or ``q``'s bare id);
- the beads MCP server's tools, ``mcp__<server>__<tool>`` under any server key
  (``mcp__plugin_<plugin>_<server>__<tool>`` too): :func:`mcp_changes` reads
  ``issue_id``/``issue_ids`` and ``status`` from the input and the created
  issue's ``id`` from the result (text, JSON text, or a list of text blocks).

Read-only verbs (``show``, ``list``, ``ready``, …), help and dry runs change
nothing and give nothing; an ``update`` counts only when it closes the issue.
Pure: no I/O.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator, Sequence
from typing import Any, Final, Literal

import msgspec

from gastownd.core.command_words import Word, option

Action = Literal["closed", "created", "updated", "reopened"]

# Beads ids: a prefix, a dash, a hash, optional .N children (``gt-a1b2``, ``spotter-dov.3``).
ISSUE_ID: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.]*-[A-Za-z0-9][A-Za-z0-9_.-]*")
CREATED_LINE: Final = re.compile(r"Created issue:?\s+([A-Za-z0-9][\w.-]*-[\w.-]+)")
MCP_TOOL: Final = re.compile(r"mcp__(?P<server>.+)__(?P<tool>close|update|reopen|create)")

# bd's global flags that take a value (the value is the next word unless ``=`` is used).
GLOBAL_VALUE_FLAGS: Final = frozenset({"--actor", "--db", "--lock-timeout", "--profile-file"})
# Per-verb flags that take a value, so that a value is never read as an id.
VERB_VALUE_FLAGS: Final = frozenset(
    {
        "--reason",
        "-r",
        "--session",
        "--status",
        "-s",
        "--title",
        "-t",
        "--description",
        "-d",
        "--design",
        "--notes",
        "--acceptance",
        "--acceptance-criteria",
        "--priority",
        "-p",
        "--assignee",
        "-a",
        "--type",
        "--label",
        "-l",
        "--labels",
        "--add-label",
        "--remove-label",
        "--set-labels",
        "--external-ref",
        "--estimate",
        "-e",
        "--parent",
        "--deps",
        "--due",
        "--defer",
        "--id",
        "--file",
        "-f",
        "--body-file",
        "--description-file",
        "--message",
        "-m",
        "--comment",
        "--format",
        *GLOBAL_VALUE_FLAGS,
    }
)
NO_CHANGE_FLAGS: Final = frozenset({"--help", "-h", "--dry-run"})
# Bounds the search for JSON in a large output (each attempt decodes a candidate block).
MAX_DECODE_ATTEMPTS: Final = 256
CHANGING_VERBS: Final = frozenset({"close", "update", "reopen", "create", "new", "q", "quick"})


class Change(msgspec.Struct, frozen=True):
    issue: str
    action: Action


class BdCall(msgspec.Struct, frozen=True):
    """One ``bd`` command that changes issues: its verb, the words after it, and
    the global flags before it."""

    verb: str
    args: tuple[Word, ...]
    global_flags: tuple[str, ...] = ()


def bd_call(words: Sequence[Word]) -> BdCall | None:
    """The verb and arguments of a ``bd`` command that may change issues, else None.

    ``words`` starts after ``bd``: global flags first, then the verb.
    """
    position = 0
    while position < len(words):
        text = words[position].text
        if not text.startswith("-") or text == "-":
            break
        if text in NO_CHANGE_FLAGS:
            return None
        position += 2 if text in GLOBAL_VALUE_FLAGS else 1
    if position >= len(words):
        return None
    verb = words[position].text
    args = tuple(words[position + 1 :])
    if verb not in CHANGING_VERBS or any(w.text in NO_CHANGE_FLAGS for w in args):
        return None
    return BdCall(verb, args, tuple(w.text for w in words[:position]))


def bd_changes(call: BdCall) -> list[Change]:
    """What a ``close``/``update``/``reopen`` call changed (creates need the output)."""
    ids = _ids(call.args)
    match call.verb:
        case "close":
            return [Change(issue, "closed") for issue in ids]
        case "reopen":
            return [Change(issue, "reopened") for issue in ids]
        case "update" if option(_texts(call.args), "--status", "-s") == "closed":
            # Only a close counts: the reference lists ``update --status closed`` among
            # the changes to attribute, not every field edit.
            return [Change(issue, "closed") for issue in ids]
    return []


def is_create(call: BdCall) -> bool:
    return call.verb in ("create", "new", "q", "quick")


def created_ids(output: str, calls: Sequence[BdCall]) -> list[str]:
    """Ids of the issues the create calls of one Bash command made, from its output.

    ``✓ Created issue: <id>`` lines name themselves. JSON output (``--json``)
    and ``q``'s bare id line are matched to the calls in order: the first JSON
    objects with an ``id`` for the JSON creates, the first bare id lines for
    the quick ones, so another command's output in the same call is not taken
    for a creation. A create whose output shows no id falls back to ``--id``.
    """
    found: dict[str, None] = dict.fromkeys(m.group(1) for m in CREATED_LINE.finditer(output))
    json_creates = [c for c in calls if c.verb in ("create", "new") and _has_flag(c, "--json")]
    quick = [c for c in calls if c.verb in ("q", "quick")]
    json_quick = [c for c in quick if _has_flag(c, "--json")]
    # Only as many JSON documents are decoded as there are JSON creates.
    for issue in itertools.islice(_json_ids(output), len(json_creates) + len(json_quick)):
        found.setdefault(issue)
    plain_quick = len(quick) - len(json_quick)
    if plain_quick:
        bare = [line.strip() for line in output.splitlines() if ISSUE_ID.fullmatch(line.strip())]
        for issue in bare[:plain_quick]:
            found.setdefault(issue)
    if not found:
        for call in calls:
            explicit = option(_texts(call.args), "--id")
            if explicit and ISSUE_ID.fullmatch(explicit):
                found.setdefault(explicit)
    return list(found)


def mcp_changes(tool_name: str, tool_input: Any, tool_response: Any) -> list[Change] | None:
    """Changes made by a beads MCP tool call; None when the tool is not one of them."""
    match = MCP_TOOL.fullmatch(tool_name)
    if match is None:
        return None
    tool = match.group("tool")
    args = tool_input if isinstance(tool_input, dict) else {}
    if tool == "create":
        if "title" not in args and "id" not in args:
            return None  # not a Beads create
        text = response_text(tool_response)
        created = [m.group(1) for m in CREATED_LINE.finditer(text)][:1]
        created = created or list(itertools.islice(_json_ids(text), 1))
        if not created and isinstance(args.get("id"), str) and ISSUE_ID.fullmatch(args["id"]):
            created = [args["id"]]
        return [Change(issue, "created") for issue in created]
    ids = _mcp_ids(args)
    if not ids:
        return None  # not shaped like a Beads tool call
    if tool == "close":
        return [Change(issue, "closed") for issue in ids]
    if tool == "reopen":
        return [Change(issue, "reopened") for issue in ids]
    if args.get("status") == "closed":
        return [Change(issue, "closed") for issue in ids]
    return []


def mcp_failed(tool_response: Any) -> bool:
    """An MCP result that reports an error (the tool changed nothing)."""
    if isinstance(tool_response, dict) and (
        tool_response.get("isError") is True or tool_response.get("is_error") is True
    ):
        return True
    text = response_text(tool_response).lstrip()
    return text.startswith(("Error", "error:", "MCP error"))


def response_text(response: Any) -> str:
    """The text of a tool result: a string, text blocks, ``stdout``/``stderr``, or JSON."""
    if isinstance(response, str):
        return response
    if isinstance(response, list):
        return "\n".join(response_text(block) for block in response)
    if not isinstance(response, dict):
        return ""
    if response.get("type") == "text" and isinstance(response.get("text"), str):
        return str(response["text"])
    if isinstance(response.get("content"), list):
        return response_text(response["content"])
    if isinstance(response.get("result"), str):
        return str(response["result"])
    streams = [response.get(k) for k in ("stdout", "output", "stderr")]
    if any(isinstance(s, str) for s in streams):
        return "\n".join(s for s in streams if isinstance(s, str))
    # A structured result (the created issue itself, structuredContent, …).
    return msgspec.json.encode(response).decode()


# ---------------------------------------------------------------- helpers


def _ids(args: Sequence[Word]) -> list[str]:
    found: dict[str, None] = {}
    skip = False
    for word in args:
        text = word.text
        if skip:
            skip = False
            continue
        if text.startswith("-") and len(text) > 1:
            skip = text in VERB_VALUE_FLAGS
            continue
        if word.literal and ISSUE_ID.fullmatch(text):
            found.setdefault(text)
    return list(found)


def _texts(words: Sequence[Word]) -> list[str]:
    return [word.text for word in words]


def _has_flag(call: BdCall, flag: str) -> bool:
    words = (*call.global_flags, *(w.text for w in call.args))
    return any(text == flag or text.startswith(flag + "=") for text in words)


def _mcp_ids(args: dict[str, Any]) -> list[str]:
    values: list[Any] = []
    for key in ("issue_id", "id"):
        if key in args:
            values.append(args[key])
    for key in ("issue_ids", "ids"):
        if isinstance(args.get(key), list):
            values += args[key]
    return list(
        dict.fromkeys(v for v in values if isinstance(v, str) and ISSUE_ID.fullmatch(v.strip()))
    )


def _json_ids(text: str) -> Iterator[str]:
    """``id`` of each JSON object (or list of objects) found in ``text``, in order."""
    for document in _json_documents(text):
        items = document if isinstance(document, list) else [document]
        for item in items:
            if isinstance(item, dict):
                issue = item.get("id")
                if isinstance(issue, str) and ISSUE_ID.fullmatch(issue):
                    yield issue


def _json_documents(text: str) -> Iterator[Any]:
    """Whole JSON documents in command output: the whole text, else each line or block."""
    stripped = text.strip()
    if not stripped:
        return
    try:
        yield msgspec.json.decode(stripped)
        return
    except msgspec.DecodeError:
        pass
    lines = text.splitlines()
    position = 0
    attempts = MAX_DECODE_ATTEMPTS
    while position < len(lines) and attempts > 0:
        line = lines[position].strip()
        if not line.startswith(("{", "[")):
            position += 1
            continue
        # The shortest run of lines from here that decodes (pretty-printed output).
        for end in range(position + 1, min(len(lines), position + 2000) + 1):
            closing = lines[end - 1].rstrip()
            if not closing.endswith(("}", "]")):
                continue
            attempts -= 1
            if attempts <= 0:
                return
            try:
                yield msgspec.json.decode("\n".join(lines[position:end]))
            except msgspec.DecodeError:
                continue
            position = end - 1
            break
        position += 1
