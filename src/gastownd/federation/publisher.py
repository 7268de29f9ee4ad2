"""The publisher: what this node learns, sent to the town's stream.

It reads durable local state (event lines after the cursor it has published, session records
after a ``rev``, digests and attributions after a row id), publishes a batch with
``publish_async`` (each record with its stable ``Nats-Msg-Id``), and advances its marks once
the stream acknowledged every record; the marks reach the store when the backlog is done or
once a second.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio
import msgspec
import structlog

from gastownd.core.query import compile_filter
from gastownd.core.records import (
    EVENT_RUN_BYTES,
    MAX_EVENT_LINES,
    MAX_RECORD_BYTES,
    AnyMessage,
    AttributionMessage,
    DigestMessage,
    EventMessage,
    Kind,
    SessionMessage,
    dedupe_id,
    encode_message,
    local_id_of,
    message_id,
    stream_name,
    subject,
)
from gastownd.eventlog import BacklogGap, EventLog
from gastownd.federation.gone import still_there
from gastownd.federation.health import LinkHealth
from gastownd.process.config import FederationConfig
from gastownd.sessions.recorder import SessionRecorder
from gastownd.store.remote import (
    MARK_ATTRIBUTIONS,
    MARK_DIGESTS,
    MARK_EVENTS,
    MARK_SESSIONS,
    MARK_STREAM,
    MSG_ID_KEY,
)

log = structlog.get_logger("gastownd.federation")

# A publish round not acknowledged in this time is sent again (the same message ids):
# a stream that lost its leader answers again once the cluster elected another.
PUBLISH_TIMEOUT_S = 3.0
IDLE_WAKE_S = 1.0
MARK_INTERVAL_S = 1.0
ROUND_S = 0.025
# A round with this many lines (or more than one record) counts as busy.
BUSY_LINES = 8
# Lines read per publish round.
EVENT_LINES_PER_ROUND = 16 * MAX_EVENT_LINES
_EVERY_LINE = compile_filter()
# The headers of a record (``Nats-Msg-Id``), without the id: the server counts them against
# max_payload and the stream's max_msg_size, nats-py does not. A record that fits only without
# them is answered by closing the connection, again at every republish.
HEADERS_BYTES = len(b"NATS/1.0\r\nNats-Msg-Id: \r\n\r\n")
# A run's JSON around its lines: the record's fields, and a seq and a comma per line.
RUN_FIELDS_BYTES = 1024
SEQ_BYTES = 24
MARKS = (MARK_EVENTS, MARK_SESSIONS, MARK_DIGESTS, MARK_ATTRIBUTIONS, MARK_STREAM)


@dataclass
class _Outgoing:
    subject: str
    msg_id: str
    data: bytes
    lines: int = 1

    @property
    def size(self) -> int:
        """What the server counts against max_payload: the record and its headers."""
        return len(self.data) + HEADERS_BYTES + len(self.msg_id.encode())


@dataclass(eq=False)
class Publisher:
    config: FederationConfig
    node: str
    town: str
    eventlog: EventLog
    sessions: SessionRecorder
    health: LinkHealth
    published: int = field(default=0, init=False)
    # Records larger than the server's max_payload: they never leave this node.
    too_large: int = field(default=0, init=False)
    marks: dict[str, str] = field(default_factory=dict, init=False)
    _wake: anyio.Event = field(default_factory=anyio.Event, init=False)
    # The last publish round was a busy one (see run): pace rounds and fetches.
    busy: bool = field(default=False, init=False)
    # Set when the store may hold new records to send (sessions, digests, attributions):
    # an emit only adds a line, and reading the store for it would cost a thread hop.
    _store_changed: bool = field(default=True, init=False)
    # Cancelled when the connection is lost: a publish round waiting on it ends.
    _publish_scope: anyio.CancelScope | None = field(default=None, init=False)
    # The largest record the server (max_payload) and the stream (max_msg_size, when the
    # stream was made by someone else, or changed) take, headers included.
    limit_bytes: int = field(default=MAX_RECORD_BYTES + (1 << 20), init=False)
    _stream_max_bytes: int | None = field(default=None, init=False)
    # Keys this node's Nats-Msg-Ids (``dedupe_id``): kept in the store, so a republish after
    # a restart has the same ids.
    _id_key: bytes = field(default=b"", init=False)

    def wake(self) -> None:
        """A line was added to the local log: publish soon."""
        self._wake.set()

    def store_changed(self) -> None:
        """A session record, digest or attribution may have been stored: publish soon."""
        self._store_changed = True
        self._wake.set()

    def cut_short(self) -> None:
        """The connection is lost: the publish round waiting on it ends."""
        if self._publish_scope is not None:
            self._publish_scope.cancel()

    async def load_marks(self) -> None:
        sessions = self.sessions
        for key in MARKS:
            value = await sessions.db(sessions.store.meta, key)
            if value is not None:
                self.marks[key] = value
        stored: str | None = await sessions.db(sessions.store.meta, MSG_ID_KEY)
        if stored is None:
            stored = secrets.token_hex(32)
            await sessions.db(sessions.store.remote.set_marks, {MSG_ID_KEY: stored})
        self._id_key = stored.encode()

    async def follow_stream(self, stream: str, created: str) -> None:
        """Publish to the stream made at ``created``. When the marks were for another one (the
        stream was deleted and made again, or the hub is new), what they say was published is
        not there any more: this node's whole history is published again, as when it first
        joined, and receivers apply what they already hold once."""
        known = self.marks.get(MARK_STREAM)
        if known == created:
            return
        marks = {MARK_STREAM: created}
        if known is not None:
            log.warning(
                "federation_stream_new",
                stream=stream,
                created=created,
                previous=known,
                action="publishing this node's history again",
            )
            epoch = self.eventlog.seqmap.epoch
            marks |= {MARK_EVENTS: f"{epoch}:-1"} | dict.fromkeys(MARKS[1:4], "0")
            self._store_changed = True
        self.marks.update(marks)
        await self._save_marks(marks)

    async def run(self, js: Any) -> None:
        attempt = 0
        unsaved: dict[str, str] = {}
        saved_at = time.monotonic()
        health = self.health
        await self._learn_stream_limit(js)
        try:
            while True:
                self._set_limit(js)
                round_started = time.monotonic()
                batch, marks = await self._next_batch()
                if not batch:
                    if unsaved:
                        await self._save_marks(unsaved)
                        saved_at = time.monotonic()
                    with anyio.move_on_after(IDLE_WAKE_S):
                        await self._wake.wait()
                    self._wake = anyio.Event()
                    continue
                try:
                    await self._publish(js, batch)
                except Exception as exc:
                    health.error("federation_publish_failed", exc, records=len(batch))
                    self._store_changed = True  # the batch is read again
                    # Deleted (ends the session), or made smaller than a record of the round.
                    await self._learn_stream_limit(js)
                    await health.back_off(attempt)
                    attempt += 1
                    continue
                attempt = 0
                health.ok("federation_publish_failed")
                self.marks.update(marks)
                unsaved.update(marks)
                self.published += len(batch)
                # Marks are saved when the backlog is done, else once a second: a crash
                # repeats at most that much, which the stream and receivers drop.
                if time.monotonic() - saved_at >= MARK_INTERVAL_S:
                    await self._save_marks(unsaved)
                    saved_at = time.monotonic()
                # Under a stream of appends, at most one round per ROUND_S, so the next
                # carries a run of lines instead of a few; a light trickle goes at once.
                self.busy = len(batch) > 1 or _lines_in(batch) >= BUSY_LINES
                if self.busy:
                    await anyio.sleep(max(0.0, round_started + ROUND_S - time.monotonic()))
        finally:
            if unsaved:
                with anyio.CancelScope(shield=True):
                    await self._save_marks(unsaved)

    async def _learn_stream_limit(self, js: Any) -> None:
        """Read the stream's max_msg_size; raises ``StreamGone`` when it was deleted."""
        info = await still_there(js, stream_name(self.town))
        if info is not None:
            size = info.config.max_msg_size
            self._stream_max_bytes = size if size is not None and size > 0 else None

    def _set_limit(self, js: Any) -> None:
        # max_payload is the connected server's: it may change at a reconnect.
        limits = [js._nc.max_payload, self._stream_max_bytes]
        self.limit_bytes = min(limit for limit in limits if limit)

    def _keep_local(self, item: _Outgoing) -> None:
        """A record over the limits: retrying cannot help, it stays local (docs: max_payload)."""
        self.too_large += 1
        log.error(
            "federation_record_too_large",
            id=item.msg_id,
            bytes=item.size,
            limit=self.limit_bytes,
            stream_max_msg_size=self._stream_max_bytes,
        )

    async def _save_marks(self, marks: dict[str, str]) -> None:
        sessions = self.sessions
        await sessions.db(sessions.store.remote.set_marks, dict(marks))
        marks.clear()

    async def _publish(self, js: Any, batch: Sequence[_Outgoing]) -> None:
        """Publish ``batch``; return once the stream acknowledged every record, else raise.

        Cut short when the connection is lost (see ``cut_short``): the round is sent
        again, with the same message ids, on the next server.
        """
        import nats.errors

        futures: list[Any] = []
        scope = anyio.CancelScope(deadline=anyio.current_time() + PUBLISH_TIMEOUT_S)
        self._publish_scope = scope
        try:
            with scope:
                for item in batch:
                    if item.size > self.limit_bytes:
                        self._keep_local(item)
                        continue
                    try:
                        future = await js.publish_async(
                            item.subject, item.data, headers={"Nats-Msg-Id": item.msg_id}
                        )
                    except nats.errors.MaxPayloadError:  # a reconnect lowered max_payload
                        self._keep_local(item)
                        continue
                    futures.append(future)
                if futures:
                    await js.publish_async_completed()
            if scope.cancelled_caught:
                if anyio.current_time() >= scope.deadline:
                    raise TimeoutError(f"not acknowledged in {PUBLISH_TIMEOUT_S:g}s")
                raise ConnectionError("connection lost during the publish round")
            for future in futures:
                future.result()  # raises the stream's refusal, if any
        finally:
            self._publish_scope = None
            for future in futures:
                if not future.done():
                    future.cancel()  # frees nats-py's in-flight slot
                elif not future.cancelled():
                    future.exception()  # retrieved: asyncio would print it at exit

    async def _next_batch(self) -> tuple[list[_Outgoing], dict[str, str]]:
        """The next records to publish and the marks to store once they are acknowledged."""
        sessions = self.sessions
        limit = self.config.batch
        batch, marks = await self._event_batch()
        if not self._store_changed:
            return batch, marks
        # Cleared before reading: a commit during the reads sets it again.
        self._store_changed = False
        remote = sessions.store.remote
        rev = self.row_mark(MARK_SESSIONS)
        for row in await sessions.db(remote.sessions_after, rev, limit):
            record = SessionMessage(town=self.town, node=self.node, id="", **row)
            batch.append(self._outgoing("session", record))
            marks[MARK_SESSIONS] = str(row["rev"])
        after_digest = self.row_mark(MARK_DIGESTS)
        for rowid, digest in await sessions.db(remote.digests_after, after_digest, limit):
            message = DigestMessage(town=self.town, node=self.node, id="", digest=digest)
            batch.append(self._outgoing("digest", message))
            marks[MARK_DIGESTS] = str(rowid)
        row_id = self.row_mark(MARK_ATTRIBUTIONS)
        for row in await sessions.db(remote.attributions_after, row_id, limit):
            attribution = AttributionMessage(town=self.town, node=self.node, id="", **row)
            batch.append(self._outgoing("attribution", attribution))
            marks[MARK_ATTRIBUTIONS] = str(row["local_id"])
        if any(m in marks for m in (MARK_SESSIONS, MARK_DIGESTS, MARK_ATTRIBUTIONS)):
            self._store_changed = True  # there may be more than a batch
        return batch, marks

    async def _event_batch(self) -> tuple[list[_Outgoing], dict[str, str]]:
        """Lines of the local log after the published cursor, from the archive first when
        retention moved them there before they were published."""
        eventlog = self.eventlog
        epoch = eventlog.seqmap.epoch
        after = self.published_seq(epoch)
        head = eventlog.index.next_seq() - 1
        if after >= head:
            return [], {}
        backlog = eventlog.backlog(_EVERY_LINE, after, head, from_archive=True)
        chunk: list[tuple[int, bytes]] = []
        try:
            while len(chunk) < EVENT_LINES_PER_ROUND:
                more = await backlog.next()
                if not more:
                    break
                chunk += more
        except BacklogGap as exc:
            # Only with the archive turned off: those lines are gone, go on after them.
            index = eventlog.index
            skip_to = index.seqs[0] - 1 if len(index) else head
            log.error(
                "federation_lines_lost", after_seq=after, resume_after=skip_to, error=str(exc)
            )
            return [], {MARK_EVENTS: f"{epoch}:{skip_to}"}
        if not chunk:
            return [], {}
        batch = [
            self._outgoing(
                "event",
                EventMessage(
                    town=self.town,
                    node=self.node,
                    id="",
                    epoch=epoch,
                    seqs=[seq for seq, _ in run],
                    lines=[msgspec.Raw(line) for _, line in run],
                ),
            )
            for run in _runs(chunk, self._run_bytes())
        ]
        return batch, {MARK_EVENTS: f"{epoch}:{chunk[-1][0]}"}

    def _run_bytes(self) -> int:
        """What a run's lines may add up to, for its record to stay under the limits."""
        room = self.limit_bytes - HEADERS_BYTES - RUN_FIELDS_BYTES - SEQ_BYTES * MAX_EVENT_LINES
        return max(1, min(EVENT_RUN_BYTES, room))

    def row_mark(self, key: str) -> int:
        """The last published session ``rev``, digest ``rowid`` or attribution id (0: none)."""
        return int(self.marks.get(key, "0"))

    def published_seq(self, epoch: int) -> int:
        """The last local seq published in this epoch (-1: none)."""
        mark = self.marks.get(MARK_EVENTS)
        if mark is None:
            return -1
        mark_epoch, _, seq = mark.partition(":")
        return int(seq) if int(mark_epoch) == epoch else -1

    def keep_after_seq(self) -> int:
        """Lines after this seq are not published yet: without the archive (where the
        publisher also reads), retention must keep them."""
        return self.published_seq(self.eventlog.seqmap.epoch)

    def _outgoing(self, kind: Kind, message: AnyMessage) -> _Outgoing:
        message.id = message_id(self.node, kind, local_id_of(message))
        lines = len(message.seqs) if isinstance(message, EventMessage) else 1
        return _Outgoing(
            subject(self.town, self.node, kind),
            dedupe_id(self._id_key, message.id),
            encode_message(message),
            lines,
        )


def _lines_in(batch: Sequence[_Outgoing]) -> int:
    return sum(item.lines for item in batch)


def _runs(lines: Sequence[tuple[int, bytes]], run_bytes: int) -> list[list[tuple[int, bytes]]]:
    """``lines`` cut into event records: at most ``MAX_EVENT_LINES`` lines, and at most
    ``run_bytes`` of lines (a longer line travels alone)."""
    runs: list[list[tuple[int, bytes]]] = []
    size = 0
    for item in lines:
        if not runs or len(runs[-1]) >= MAX_EVENT_LINES or size + len(item[1]) > run_bytes:
            runs.append([])
            size = 0
        runs[-1].append(item)
        size += len(item[1])
    return runs
