"""Retry rules: a retry must fit in the deadline, and retries draw on a budget."""

from __future__ import annotations

import pytest

from s3proxy.retries import RetryBudget, retry_fits


@pytest.mark.parametrize(
    ("delay", "last_attempt", "remaining", "fits"),
    [
        pytest.param(0.05, 0.01, 9.9, True, id="fast-error-plenty-of-time"),
        pytest.param(0.5, 4.0, 6.0, True, id="timeout-another-fits"),
        pytest.param(0.5, 4.0, 4.2, False, id="timeout-another-does-not-fit"),
        pytest.param(0.0, 4.0, 4.0, True, id="exactly-fits"),
        pytest.param(1.0, 0.0, 0.5, False, id="backoff-alone-too-long"),
        pytest.param(0.0, 0.0, -0.1, False, id="deadline-passed"),
    ],
)
def test_a_retry_must_end_before_the_deadline(
    delay: float, last_attempt: float, remaining: float, fits: bool
) -> None:
    """A retry is made only if backoff plus an attempt as long as the last one fits."""
    assert retry_fits(delay, last_attempt, remaining) is fits


@pytest.mark.parametrize(
    ("tokens", "deposits", "granted"),
    [
        pytest.param(0.0, 0, 0, id="empty"),
        pytest.param(0.0, 9, 0, id="nine-calls-not-enough"),
        pytest.param(0.0, 10, 1, id="ten-calls-earn-one"),
        pytest.param(0.0, 35, 3, id="thirty-five-calls-earn-three"),
        pytest.param(10.0, 0, 10, id="full-start"),
        pytest.param(10.0, 1000, 10, id="saved-at-most-capacity"),
    ],
)
def test_calls_earn_retries(tokens: float, deposits: int, granted: int) -> None:
    """Each call deposits a tenth of a retry; at most ``capacity`` retries are saved."""
    budget = RetryBudget(ratio=0.1, capacity=10.0, tokens=tokens)
    for _ in range(deposits):
        budget.deposit()
    assert sum(budget.withdraw() for _ in range(100)) == granted


@pytest.mark.parametrize("calls", [10, 100, 1000, 10_000])
def test_a_persistent_outage_costs_at_most_ratio_more(calls: int) -> None:
    """Every call failing and wanting two retries: attempts stay within
    (1 + ratio) x calls + capacity."""
    budget = RetryBudget(ratio=0.1, capacity=10.0, tokens=10.0)
    attempts = 0
    for _ in range(calls):
        budget.deposit()
        attempts += 1 + sum(budget.withdraw() for _ in range(2))
    assert attempts <= 1.1 * calls + 10
