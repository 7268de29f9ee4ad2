"""Every way agents touch Beads, through the real hook and socket: all attributed, no decoy."""

from __future__ import annotations

from pathlib import Path

from tests.attribution_forms import FORMS, decoy_issues, expected_attributions
from tests.conftest import DaemonProcess
from tests.integration.test_hooks import SESSION, payload, run_hook, wait_until


def test_the_forms_table_through_the_real_hook(daemon_proc: DaemonProcess, town: Path) -> None:
    assert run_hook(town, payload("SessionStart", source="startup")).returncode == 0
    for form in FORMS:
        call = payload(
            "PostToolUse",
            tool_name=form.tool_name,
            tool_use_id="toolu_01",
            tool_input=form.tool_input,
            tool_response=form.tool_response,
        )
        assert run_hook(town, call, "--async").returncode == 0
    expected = expected_attributions()
    with daemon_proc.client() as client:

        def attributed() -> set[tuple[str, str]]:
            found = set()
            for issue, _action in expected:
                for record in client.attribution(issue).records:
                    assert record.session_id == SESSION
                    found.add((issue, record.action))
            return found

        # The hook calls were detached: wait until the last one has been applied.
        found = wait_until(lambda: (f := attributed()) >= expected and f)
        assert found == expected, f"coverage {len(found & expected)}/{len(expected)}"
        false = {issue for issue in decoy_issues() if client.attribution(issue).records}
        assert not false
        wisp = client.wisp(SESSION)
    closed = {s.ref for s in wisp.steps if s.kind == "issue_closed"}
    assert closed == {issue for issue, action in expected if action == "closed"}
