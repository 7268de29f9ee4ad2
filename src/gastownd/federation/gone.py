"""The town's stream, or this node's consumer, deleted while the daemon runs.

An administrator (or anyone whose account may) can delete the stream, which takes every
consumer with it, or delete one node's consumer. Publishing and fetching then fail on
every retry, and nothing inside the session makes them again: only the start of a session
does (``ensure_stream``, then the consumer's ``pull_subscribe``). So after a failed publish
or fetch, the publisher and the consumer ask JetStream whether what they use still exists,
and end the session when it says no; the next session makes both again. Any other failure
(a lost server, an election) is left to their retries.
"""

from __future__ import annotations

from typing import Any


class StreamGone(Exception):
    """The town's stream or this node's consumer does not exist any more."""


async def still_there(js: Any, stream: str, durable: str | None = None) -> Any | None:
    """The info of ``stream`` (or of its consumer ``durable``); None when JetStream does not
    answer. Raises :class:`StreamGone` when it answers that they are not there."""
    import nats.js.errors

    try:
        if durable is None:
            return await js.stream_info(stream)
        return await js.consumer_info(stream, durable)
    except nats.js.errors.NotFoundError as exc:
        what = stream if durable is None else f"consumer {durable} of {stream}"
        raise StreamGone(f"{what} was deleted ({exc.description}): making it again") from None
    except Exception:  # no answer: the failure was the network's, retried as before
        return None
