"""Commands on issue attribution: attribute, attribution."""

from __future__ import annotations

import argparse
import os

from gastown_client.commands.common import Command, add_json, answer, client_for, lookup
from gastown_client.protocol import AttributionResult

ATTRIBUTION_ENV = ("CLAUDE_CODE_SESSION_ID", "GT_ROLE", "BD_ACTOR", "GT_SESSION")


def _attribute_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("issue", help="a Beads issue id: prefix-hash, e.g. gt-a1b2 or gt-a1b2.3")
    parser.add_argument("--session", help="default: resolved from the environment")
    parser.add_argument(
        "--action", choices=["closed", "created", "updated", "reopened"], default="closed"
    )
    add_json(parser)


def cmd_attribute(args: argparse.Namespace) -> int:
    env = {k: os.environ[k] for k in ATTRIBUTION_ENV if os.environ.get(k)}
    runtime = os.path.join(os.getcwd(), ".runtime", "session_id")
    try:
        with open(runtime, encoding="utf-8") as handle:
            first = handle.readline().strip()
        if first:
            env["GT_RUNTIME_SESSION_ID"] = first
    except OSError:
        pass
    with client_for(args) as client:
        result = client.attribute(
            args.issue, session=args.session, action=args.action, env=env, cwd=os.getcwd()
        )
    return answer(
        args,
        result,
        lambda result: print(
            f"{result.issue} {result.action} by session {result.session_id} "
            f"({result.actor}; rule: {result.rule})"
        ),
    )


def _print_attribution(result: AttributionResult) -> None:
    if not result.records:
        print(f"no session is recorded as touching {result.issue}")
    for record in result.records:
        print(
            f"{record.at}  {record.action:<8} {record.session_id}  {record.actor}"
            + (f"  digest {record.digest_id}" if record.digest_id else "")
            + (f"  on {record.node}" if record.node else "")
        )


ATTRIBUTE = Command(
    "attribute", "record which session touched an issue", cmd_attribute, _attribute_arguments
)
ATTRIBUTION = lookup(
    "attribution",
    "every session that touched an issue",
    "issue",
    lambda client, issue: client.attribution(issue),
    _print_attribution,
)
