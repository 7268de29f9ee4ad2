"""Digests: content drawn from the steps, the Beads-style summary, the hash chain."""

from __future__ import annotations

import hashlib
from typing import Any

import msgspec
import pytest

from gastownd.core.digest import (
    MAX_SUMMARY_STEPS,
    Commit,
    Digest,
    Handoff,
    audit_chain,
    canonical_bytes,
    digest_hash,
    digest_id_for,
    make_digest,
    seal,
    verify_chain,
)
from gastownd.core.wisp import StartArgs, Wisp, abandon, squash, start, step

T0 = 1_750_000_000.0
SID = "46621448-3caa-4bbb-8ccc-123456789abc"
ACTOR = "gastown/polecats/rust"


def _session(*steps: tuple[str, str | None, dict[str, Any] | None]) -> Wisp:
    wisp = start(
        None,
        StartArgs(session_id=SID, actor=ACTOR, topic="fix login", tmux_session="gt-rust"),
        now=T0,
    )
    for n, (kind, ref, payload) in enumerate(steps, start=1):
        wisp = step(wisp, kind, ref, payload, now=T0 + n)
    return wisp


def _digest(prev_hash: str = "", sid: str = SID, end: float = T0 + 3725) -> Digest:
    wisp = start(None, StartArgs(session_id=sid, actor=ACTOR), now=T0)
    return squash(step(wisp, "note", now=T0 + 1), "logout", now=end, prev_hash=prev_hash)[1]


def _chain(n: int) -> list[Digest]:
    digests: list[Digest] = []
    for i in range(n):
        prev = digests[-1].hash if digests else ""
        digests.append(_digest(prev, sid=f"s{i}", end=T0 + 10 + i))
    return digests


def test_digest_gathers_counts_issues_commits_and_handoffs() -> None:
    wisp = _session(
        ("issue_created", "gt-7", None),
        ("commit", "abc1234", {"subject": "Fix login\n\nlong body"}),
        ("commit", None, {"sha": "def5678", "message": "Add test"}),
        ("commit", "abc1234", {"subject": "duplicate"}),
        ("issue_closed", None, {"issue": "gt-7"}),
        ("issue_closed", "gt-7", None),
        ("handoff", "next-session", {"subject": "over to you"}),
        ("turn", None, None),
        ("custom_kind", None, None),
    )
    _, digest = squash(wisp, "prompt_input_exit", now=T0 + 3725)
    assert digest.digest_id == digest_id_for(SID, 1)
    assert (digest.session_id, digest.segment, digest.actor, digest.role, digest.rig) == (
        SID,
        1,
        ACTOR,
        "polecat",
        "gastown",
    )
    assert (digest.started_at, digest.ended_at, digest.duration_s) == (T0, T0 + 3725, 3725.0)
    assert (digest.state, digest.end_reason, digest.step_count) == (
        "squashed",
        "prompt_input_exit",
        9,
    )
    assert digest.counts == {
        "commit": 3,
        "custom_kind": 1,
        "handoff": 1,
        "issue_closed": 2,
        "issue_created": 1,
        "turn": 1,
    }
    assert digest.issues_created == ("gt-7",)
    assert digest.issues_closed == ("gt-7",)
    assert digest.commits == (
        Commit(sha="abc1234", subject="Fix login"),
        Commit(sha="def5678", subject="Add test"),
    )
    assert digest.handoffs == (Handoff(at=T0 + 7, to="next-session", subject="over to you"),)
    assert (digest.topic, digest.tmux_session) == ("fix login", "gt-rust")


def test_summary_is_in_beads_style() -> None:
    wisp = _session(("commit", "abc1234", {"subject": "Fix login"}), ("issue_closed", "gt-7", None))
    _, digest = squash(wisp, "logout", now=T0 + 3725)
    assert digest.title == f"Digest: {SID}"
    assert digest.summary == (
        "## Session Summary\n"
        "\n"
        f"**Session**: {SID} (segment 1)\n"
        f"**Actor**: {ACTOR}\n"
        "**Topic**: fix login\n"
        "**Started**: 2025-06-15T15:06:40Z\n"
        "**Ended**: 2025-06-15T16:08:45Z (squashed: logout)\n"
        "**Duration**: 1h02m05s\n"
        "**Steps**: 2\n"
        "\n"
        "---\n"
        "\n"
        "### Steps\n"
        "\n"
        "1. **[commit]** 2025-06-15T15:06:41Z abc1234 — Fix login\n"
        "2. **[issue_closed]** 2025-06-15T15:06:42Z gt-7\n"
    )


def test_summary_of_a_session_without_steps_says_so() -> None:
    _, digest = abandon(_session(), now=T0 + 5)
    assert "_(no steps recorded)_" in digest.summary
    assert "(abandoned: idle_timeout)" in digest.summary


def test_summary_lists_a_bounded_number_of_steps() -> None:
    wisp = _session(*[("turn", None, {"text": "x" * 1000})] * (MAX_SUMMARY_STEPS + 50))
    _, digest = squash(wisp, "logout", now=T0 + 9999)
    lines = digest.summary.splitlines()
    assert lines[-1] == "_… and 50 more steps_"
    assert sum(line.startswith(tuple("0123456789")) for line in lines) == MAX_SUMMARY_STEPS
    assert max(len(line) for line in lines) < 300
    assert digest.step_count == MAX_SUMMARY_STEPS + 50


def test_digest_id_is_deterministic_per_session_and_segment() -> None:
    assert digest_id_for(SID, 1) == digest_id_for(SID, 1)
    assert digest_id_for(SID, 1) != digest_id_for(SID, 2)
    assert digest_id_for(SID, 1).startswith("dg-")


def test_reopened_session_gets_a_new_digest_per_segment() -> None:
    first_end, first = squash(_session(("note", None, None)), "logout", now=T0 + 10)
    again = start(first_end, StartArgs(session_id=SID, actor=ACTOR, source="resume"), now=T0 + 20)
    _, second = squash(again, "logout", now=T0 + 30, prev_hash=first.hash)
    assert (first.segment, second.segment) == (1, 2)
    assert first.digest_id != second.digest_id
    assert verify_chain([first, second]) is None


def test_digest_needs_an_ended_wisp() -> None:
    with pytest.raises(ValueError, match="has not ended"):
        make_digest(_session())


def test_hash_is_sha256_of_sorted_canonical_bytes_without_the_hash() -> None:
    digest = _digest()
    raw = canonical_bytes(digest)
    assert b'"hash"' not in raw
    assert digest.hash == hashlib.sha256(raw).hexdigest() == digest_hash(digest)
    keys = list(msgspec.json.decode(raw))
    assert keys == sorted(keys)
    assert digest_hash(msgspec.structs.replace(digest, hash="x")) == digest.hash


def test_hash_survives_a_json_round_trip() -> None:
    digest = _digest()
    decoded = msgspec.json.decode(msgspec.json.encode(digest), type=Digest)
    assert decoded == digest
    assert digest_hash(decoded) == digest.hash


def test_same_content_gives_the_same_hash() -> None:
    assert _digest().hash == _digest().hash
    assert _digest().hash != _digest(prev_hash="a" * 64).hash


def test_an_intact_chain_verifies() -> None:
    assert verify_chain([]) is None
    assert verify_chain(_chain(4)) is None


def test_a_chain_suffix_verifies_against_its_anchor() -> None:
    chain = _chain(4)
    assert verify_chain(chain[2:]) == 0
    assert verify_chain(chain[2:], anchor=chain[1].hash) is None


@pytest.mark.parametrize("index", [0, 1, 3])
def test_edited_content_breaks_its_own_link(index: int) -> None:
    chain = _chain(4)
    chain[index] = msgspec.structs.replace(chain[index], end_reason="tampered")
    assert verify_chain(chain) == index


@pytest.mark.parametrize("index", [0, 1, 2])
def test_a_resealed_edit_breaks_the_next_link(index: int) -> None:
    chain = _chain(4)
    chain[index] = seal(msgspec.structs.replace(chain[index], counts={"note": 9}))
    assert verify_chain(chain) == index + 1


def test_a_dropped_digest_breaks_the_chain() -> None:
    chain = _chain(4)
    assert verify_chain([chain[0], chain[2], chain[3]]) == 1
    audit = audit_chain([chain[0], chain[2], chain[3]])
    assert audit.broken_reason == "prev_hash matches no digest of the actor"


def test_links_do_not_depend_on_order() -> None:
    # Machines' clocks may disagree: a successor can sort before its predecessor.
    chain = _chain(3)
    assert verify_chain([chain[1], chain[0], chain[2]]) is None


def test_two_digests_on_one_predecessor_are_a_fork_not_a_break() -> None:
    chain = _chain(2)
    # The same identity on another machine also linked a digest to chain[0].
    other = _digest(chain[0].hash, sid="elsewhere", end=T0 + 20)
    audit = audit_chain([*chain, other])
    assert audit.broken_at is None
    assert audit.forks == {chain[0].hash: [1, 2]}


def test_two_first_digests_are_a_fork_too() -> None:
    first = _digest("", sid="a", end=T0 + 1)
    second = _digest("", sid="b", end=T0 + 2)
    audit = audit_chain([first, second])
    assert (audit.broken_at, audit.forks) == (None, {"": [0, 1]})


def test_a_digest_of_another_actor_breaks_the_chain() -> None:
    chain = _chain(2)
    stranger = seal(msgspec.structs.replace(_digest(chain[1].hash), actor="gastown/crew/ann"))
    assert verify_chain([*chain, stranger]) == 2
