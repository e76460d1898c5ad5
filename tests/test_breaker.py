"""The origin's circuit breaker: consecutive failures open it, one probe at a time closes it."""

from __future__ import annotations

import pytest

from s3proxy.breaker import Breaker, Permit, State, is_failure
from s3proxy.exceptions import ObjectChanged, ObjectNotFound, OriginError, OriginTimeout

T0 = 1000.0


def opened(now: float = T0) -> Breaker:
    breaker = Breaker(threshold=3, cooldown=5.0)
    for _ in range(3):
        breaker.failed(now)
    return breaker


@pytest.mark.parametrize(
    ("failures", "state"),
    [
        pytest.param(0, State.CLOSED, id="none"),
        pytest.param(2, State.CLOSED, id="below-threshold"),
        pytest.param(3, State.OPEN, id="threshold"),
        pytest.param(9, State.OPEN, id="beyond"),
    ],
)
def test_consecutive_failures_open_it(failures: int, state: State) -> None:
    """``threshold`` failures in a row open the breaker; fewer leave it closed."""
    breaker = Breaker(threshold=3, cooldown=5.0)
    for _ in range(failures):
        breaker.failed(T0)
    assert breaker.state(T0) is state


def test_a_success_resets_the_count() -> None:
    """Failures must be consecutive: a success in between starts the count again."""
    breaker = Breaker(threshold=3, cooldown=5.0)
    breaker.failed(T0)
    breaker.failed(T0)
    breaker.succeeded()
    breaker.failed(T0)
    breaker.failed(T0)
    assert breaker.permit(T0) is Permit.CALL


def test_only_the_failure_that_opens_it_says_so() -> None:
    """``failed`` returns True exactly once per opening (one log line, not one per call)."""
    breaker = Breaker(threshold=2, cooldown=5.0)
    assert [breaker.failed(T0) for _ in range(4)] == [False, True, False, False]


@pytest.mark.parametrize(
    ("after", "permits"),
    [
        pytest.param(0.0, [Permit.REFUSE, Permit.REFUSE], id="open-refuses"),
        pytest.param(4.9, [Permit.REFUSE], id="still-cooling"),
        pytest.param(5.0, [Permit.PROBE, Permit.REFUSE, Permit.REFUSE], id="one-probe"),
        pytest.param(60.0, [Permit.PROBE, Permit.REFUSE], id="long-after-one-probe"),
    ],
)
def test_open_refuses_then_lets_one_probe_out(after: float, permits: list[Permit]) -> None:
    """Open: every call is refused; after the cooldown exactly one call probes."""
    breaker = opened()
    assert [breaker.permit(T0 + after) for _ in permits] == permits


@pytest.mark.parametrize(
    ("verdict", "state_after", "next_permit"),
    [
        pytest.param("succeeded", State.CLOSED, Permit.CALL, id="probe-ok-closes"),
        pytest.param("failed", State.OPEN, Permit.REFUSE, id="probe-failed-reopens"),
        pytest.param("abandoned", State.HALF_OPEN, Permit.PROBE, id="probe-cancelled-frees"),
    ],
)
def test_the_probe_decides(verdict: str, state_after: State, next_permit: Permit) -> None:
    """The probe's outcome closes the breaker, opens it for another cooldown, or (cancelled)
    lets the next call probe."""
    breaker = opened()
    now = T0 + 6
    assert breaker.permit(now) is Permit.PROBE
    if verdict == "succeeded":
        breaker.succeeded()
    elif verdict == "failed":
        breaker.failed(now, probe=True)
    else:
        breaker.abandoned()
    assert breaker.state(now) is state_after
    assert breaker.permit(now) is next_permit


def test_a_failed_probe_waits_a_full_cooldown_again() -> None:
    """After a failed probe, the next probe comes one cooldown after that failure."""
    breaker = opened()
    assert breaker.permit(T0 + 6) is Permit.PROBE
    breaker.failed(T0 + 7, probe=True)
    assert breaker.permit(T0 + 11.9) is Permit.REFUSE
    assert breaker.permit(T0 + 12) is Permit.PROBE


@pytest.mark.parametrize(
    ("exc", "failure"),
    [
        pytest.param(ObjectNotFound("k"), False, id="404-has-no-status"),
        pytest.param(ObjectChanged("k"), False, id="412-if-match"),
        pytest.param(OriginError("S3 answered 403", 403), False, id="4xx"),
        pytest.param(OriginError("S3 answered 503", 503), True, id="5xx"),
        pytest.param(OriginError("no connection"), True, id="no-answer"),
        pytest.param(OriginTimeout("slow"), True, id="timeout"),
    ],
)
def test_only_ill_health_counts_as_a_failure(exc: OriginError, failure: bool) -> None:
    """Answers about an object (404, 412, other 4xx) never count toward opening the breaker."""
    assert is_failure(exc) is failure
