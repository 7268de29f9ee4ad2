"""Federation records: what one node tells the others, and how a receiver checks it.

Every record travels alone, as one JetStream message on the subject
``gastown.<town>.<node>.<kind>`` of the town's stream ``GASTOWN_<town>``,
with a stable id (``<node>.<kind>.<local id>``), keyed by the node's secret in
its ``Nats-Msg-Id`` (:func:`dedupe_id`): a republish after a crash or a
reconnect is the same message, deduplicated by the stream and applied
idempotently by receivers. Kinds:

- ``event``: a run of lines of the sender's event log (gt's lines included),
  each with its cursor (``epoch``, its ``seq``); local id
  ``<epoch>:<first seq>-<last seq>``. A run starts after the last line the
  stream acknowledged and holds up to :data:`MAX_EVENT_LINES` lines, so a
  republish of a full run is the same message; a receiver applies each line
  once, by ``(node, epoch, seq)``, whatever run it came in;
- ``session``: the sender's permanent record of one session (hook-fed or only
  logged), as of change ``rev``; local id ``<session_id>.<rev>``; a receiver
  keeps the highest ``rev``;
- ``digest``: an immutable digest; local id its ``digest_id``;
- ``attribution``: one attribution; local id its row id on the sender.

Remote input is untrusted: :func:`decode_message` checks the size, the shape
(msgspec), that every number fits a store column (:mod:`gastownd.core.bounds`),
that the record is for this town, that its node is the subject's and not this
node, its id, and what it carries (an event line must be a Gas Town line; a
digest must hash to its ``hash``). Anything else raises :class:`Rejected` with
a short reason, counted by the caller. :func:`refuse_future` then drops what is
dated ahead of the receiver's clock. Pure: no I/O, time is passed in.
"""

from __future__ import annotations

import hashlib
import itertools
import re
from typing import TYPE_CHECKING, Any, Final, Literal

import msgspec

from gastownd.core.bounds import Count
from gastownd.core.digest import Digest, digest_hash, digest_id_for
from gastownd.core.events import MAX_LINE_BYTES, parse_line, parse_ts
from gastownd.core.session_record import NewAttribution, SessionRecord

# Node and town names are NATS subject tokens: no dots, spaces or wildcards.
NAME_PATTERN: Final = re.compile(r"[A-Za-z0-9_-]{1,64}")
MAX_RECORD_BYTES: Final = MAX_LINE_BYTES + (64 << 10)
# Lines of one event record, and the bytes a run aims to stay under (a longer line
# travels alone). One message per line would cost more than the line itself.
MAX_EVENT_LINES: Final = 256
EVENT_RUN_BYTES: Final = 256 << 10
SUBJECT_ROOT: Final = "gastown"
Kind = Literal["event", "session", "digest", "attribution"]
KINDS: Final[tuple[Kind, ...]] = ("event", "session", "digest", "attribution")


class Rejected(Exception):
    """A remote record that must not be applied; ``reason`` is a short, stable label."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class Message(msgspec.Struct, tag_field="kind", kw_only=True):
    """Base of every federation record; never sent itself."""

    town: str
    node: str
    id: str


class EventMessage(Message, tag="event", kw_only=True):
    epoch: Count
    # Strictly increasing seqs, one per line.
    seqs: list[Count]
    lines: list[msgspec.Raw]


def _under_header(name: str, tag: str, record: type[msgspec.Struct], *lead: tuple[str, Any]) -> Any:
    """A message type: the header, ``lead`` fields, then ``record``'s fields in their
    order (its ``node`` is the header's). msgspec cannot inherit from two structs with
    fields; this keeps each record's fields declared once."""
    fields = [
        (f.name, f.type) if f.required else (f.name, f.type, f.default)
        for f in msgspec.structs.fields(record)
        if f.name not in Message.__struct_fields__
    ]
    return msgspec.defstruct(
        name, [*lead, *fields], bases=(Message,), tag=tag, kw_only=True, module=__name__
    )


if TYPE_CHECKING:
    # What the runtime classes below are, to the type checker (which knows no defstruct);
    # mypy's frozen rule is moot, as every message is built once and never changed.
    class SessionMessage(Message, SessionRecord, tag="session", kw_only=True):  # type: ignore[misc]
        """A :class:`SessionRecord` under the message header."""

    class AttributionMessage(Message, NewAttribution, tag="attribution", kw_only=True):  # type: ignore[misc]
        """A :class:`NewAttribution` under the message header, with its row id."""

        local_id: Count

else:
    SessionMessage = _under_header("SessionMessage", "session", SessionRecord)
    AttributionMessage = _under_header(
        "AttributionMessage", "attribution", NewAttribution, ("local_id", Count)
    )


class DigestMessage(Message, tag="digest", kw_only=True):
    digest: Digest


AnyMessage = EventMessage | SessionMessage | DigestMessage | AttributionMessage

# Message header fields that are not the session's (its ``node`` is).
_HEADER_ONLY: Final = frozenset(Message.__struct_fields__) - {"node"}


def session_message(record: SessionRecord, *, town: str) -> SessionMessage:
    """The record as sent (``id`` still empty: the sender names it)."""
    return SessionMessage(town=town, id="", **msgspec.structs.asdict(record))


def session_record(message: SessionMessage) -> SessionRecord:
    """The record a session message carries, ``node`` the sender's."""
    fields = msgspec.structs.asdict(message)
    return SessionRecord(**{k: v for k, v in fields.items() if k not in _HEADER_ONLY})


_encoder: Final = msgspec.json.Encoder()
# How msgspec words a value outside its field's bounds (``core.bounds``), or a number
# beyond a float (1e999).
_OUT_OF_RANGE: Final = re.compile(r"Expected `\w+` [<>]=|[Nn]umber out of range")
_decoder: Final = msgspec.json.Decoder(AnyMessage)


def stream_name(town: str) -> str:
    return f"GASTOWN_{town}"


def town_subjects(town: str) -> str:
    return f"{SUBJECT_ROOT}.{town}.>"


def subject(town: str, node: str, kind: Kind) -> str:
    return f"{SUBJECT_ROOT}.{town}.{node}.{kind}"


def message_id(node: str, kind: Kind, local_id: str) -> str:
    return f"{node}.{kind}.{local_id}"


def dedupe_id(key: bytes, record_id: str) -> str:
    """A record's ``Nats-Msg-Id``: its id, then a hash of it keyed by a secret of the sending
    node's store. The stream drops a message whose Nats-Msg-Id it has seen, whoever sent it
    and on whatever subject; a bare id (node, kind, epoch and seq: predictable) would let any
    sender make it drop a node's next record. The same for a republish from the same store,
    which the stream still drops."""
    mac = hashlib.blake2b(record_id.encode(), key=key[:64], digest_size=16).hexdigest()
    return f"{record_id}.{mac}"


def local_id_of(message: AnyMessage) -> str:
    match message:
        case EventMessage(seqs=seqs):
            return f"{message.epoch}:{seqs[0]}-{seqs[-1]}" if seqs else f"{message.epoch}:-"
        case SessionMessage():
            return f"{message.session_id}.{message.rev}"
        case DigestMessage():
            return message.digest.digest_id
        case AttributionMessage():
            return str(message.local_id)
    raise AssertionError(message)


def kind_of(message: AnyMessage) -> Kind:
    tag = type(message).__struct_config__.tag
    for kind in KINDS:
        if kind == tag:
            return kind
    raise AssertionError(tag)


def encode_message(message: AnyMessage) -> bytes:
    return _encoder.encode(message)


def decode_message(subject_name: str, data: bytes, *, town: str, local_node: str) -> AnyMessage:
    """The record carried by a message on ``subject_name``, checked; else :class:`Rejected`."""
    if len(data) > MAX_RECORD_BYTES:
        raise Rejected("too_large", f"{len(data)} bytes")
    parts = subject_name.split(".")
    if len(parts) != 4 or parts[0] != SUBJECT_ROOT or parts[3] not in KINDS:
        raise Rejected("bad_subject", subject_name)
    if parts[1] != town:
        raise Rejected("other_town", parts[1])
    sender = parts[2]
    try:
        message: AnyMessage = _decoder.decode(data)
    except msgspec.ValidationError as exc:
        # Valid JSON, but a number no store column can hold, or the wrong shape.
        reason = "out_of_range" if _OUT_OF_RANGE.search(str(exc)) else "malformed"
        raise Rejected(reason, str(exc)) from None
    except msgspec.DecodeError as exc:
        raise Rejected("malformed", str(exc)) from None
    except RecursionError:
        # msgspec recurses once per level, even to skip a value: 1,000 nested brackets
        # anywhere in the record exceed Python's limit. Not the store's fault, the record's.
        raise Rejected("malformed", "nested too deep") from None
    if message.town != town:
        raise Rejected("other_town", message.town)
    if message.node == local_node:
        raise Rejected("claims_this_node", f"on {subject_name}")
    if message.node != sender or not NAME_PATTERN.fullmatch(sender):
        raise Rejected("node_mismatch", f"{message.node!r} on {subject_name}")
    kind = kind_of(message)
    if kind != parts[3]:
        raise Rejected("kind_mismatch", f"{kind} on {subject_name}")
    if message.id != message_id(sender, kind, local_id_of(message)):
        raise Rejected("bad_id", message.id)
    _check_content(message)
    return message


def refuse_future(message: AnyMessage, not_after: float) -> tuple[AnyMessage | None, int]:
    """``message`` without what is dated after ``not_after`` (the receiver's clock plus
    the skew it allows), and how many lines or records that was; None when nothing is
    left. A line from the future would sit on top of every view until its date came.

    Lines of a run are refused one by one (the rest of the run still counts); a session
    record or attribution dated in the future is refused whole. Digests always pass:
    they are immutable links of a chain, ordered by arrival (never by their dates), and
    a node whose clock is behind must still see them to link after them.
    """
    match message:
        case EventMessage(seqs=seqs, lines=lines):
            kept = [
                (seq, line)
                for seq, line in zip(seqs, lines, strict=True)
                if _line_ts(line) <= not_after
            ]
            if len(kept) == len(seqs):
                return message, 0
            if not kept:
                return None, len(seqs)
            # The id still names the run as sent: a redelivery is the same message.
            trimmed = msgspec.structs.replace(
                message, seqs=[seq for seq, _ in kept], lines=[line for _, line in kept]
            )
            return trimmed, len(seqs) - len(kept)
        case SessionMessage():
            times = [message.first_start_at, message.last_start_at, message.last_activity_at]
            latest = max([*times, message.ended_at or 0.0])
        case DigestMessage():
            return message, 0
        case AttributionMessage():
            latest = message.at
    return (None, 1) if latest > not_after else (message, 0)


def _line_ts(line: msgspec.Raw) -> int:
    parsed = parse_line(bytes(line))
    ts = parse_ts(parsed.ts) if parsed is not None else None
    assert ts is not None  # checked by decode_message
    return ts


def _check_content(message: AnyMessage) -> None:
    match message:
        case EventMessage(seqs=seqs, lines=lines):
            if not seqs or len(seqs) != len(lines) or len(seqs) > MAX_EVENT_LINES:
                raise Rejected("bad_event", f"{len(seqs)} seqs for {len(lines)} lines")
            if message.epoch < 0 or seqs[0] < 0 or any(a >= b for a, b in itertools.pairwise(seqs)):
                raise Rejected("bad_event", "seqs must increase")
            for seq, line in zip(seqs, lines, strict=True):
                raw = bytes(line)
                parsed = parse_line(raw)
                if len(raw) > MAX_LINE_BYTES or parsed is None or parse_ts(parsed.ts) is None:
                    raise Rejected("bad_line", f"seq {seq}")
        case SessionMessage():
            if not message.session_id.strip() or not message.actor.strip() or message.rev < 0:
                raise Rejected("bad_session", message.session_id)
        case DigestMessage(digest=digest):
            if digest.hash != digest_hash(digest):
                raise Rejected("bad_digest", f"{digest.digest_id}: content does not match hash")
            if digest.digest_id != digest_id_for(digest.session_id, digest.segment):
                raise Rejected("bad_digest", f"{digest.digest_id}: id does not match session")
        case AttributionMessage():
            if not message.issue.strip() or not message.session_id.strip():
                raise Rejected("bad_attribution", str(message.local_id))
