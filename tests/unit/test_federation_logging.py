"""Federation's log: an error seen again is logged again (rate-limited, never for good)."""

from __future__ import annotations

from gastownd.federation.health import RateLimited


def test_a_repeated_key_is_logged_once_a_period_with_its_count() -> None:
    now = [100.0]
    limited = RateLimited(every_s=60.0, clock=lambda: now[0])
    assert limited.admit("error:x") == 1  # the first time: logged
    assert limited.admit("error:x") is None  # again at once: counted
    assert limited.admit("error:x", count=3) is None
    assert limited.admit("error:y") == 1  # another error is its own key
    now[0] += 60.0
    assert limited.admit("error:x") == 5  # a second outage, a minute on: logged, with count
    assert limited.admit("error:x") is None
    now[0] += 3600.0
    assert limited.admit("error:x") == 2  # never suppressed for good
