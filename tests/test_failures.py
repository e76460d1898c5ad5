"""S3's failures remembered per key for the error TTL."""

from __future__ import annotations

import pytest

from s3proxy.exceptions import OriginError, OriginTimeout
from s3proxy.failures import FailureMemory

T0 = 1000.0


@pytest.mark.parametrize(
    ("ttl", "after", "remembered"),
    [
        pytest.param(5.0, 0.0, True, id="at-once"),
        pytest.param(5.0, 4.9, True, id="within-ttl"),
        pytest.param(5.0, 5.0, False, id="at-ttl-forgotten"),
        pytest.param(5.0, 60.0, False, id="long-after"),
        pytest.param(0.0, 0.0, False, id="ttl-zero-remembers-nothing"),
    ],
)
def test_a_failure_is_remembered_for_the_ttl(ttl: float, after: float, remembered: bool) -> None:
    """Within ``ttl`` seconds the key's failure is answered again; after, S3 is asked."""
    memory = FailureMemory(ttl)
    memory.remember("a", OriginError("S3 answered 500", 500), T0)
    assert (memory.recall("a", T0 + after) is not None) is remembered
    assert memory.recall("b", T0 + after) is None


@pytest.mark.parametrize(
    "error",
    [
        pytest.param(OriginError("S3 answered 503", 503), id="error-502"),
        pytest.param(OriginTimeout("S3 timed out"), id="timeout-504"),
    ],
)
def test_the_recalled_failure_keeps_its_kind(error: OriginError) -> None:
    """A remembered timeout is still a timeout (504), an error still an error (502); each
    recall is a new exception."""
    memory = FailureMemory(5.0)
    memory.remember("a", error, T0)
    first, second = memory.recall("a", T0), memory.recall("a", T0 + 1)
    assert type(first) is type(error) and type(second) is type(error)
    assert first is not second and first is not error
    assert first is not None and first.status == error.status


@pytest.mark.parametrize(
    ("expired", "fresh", "kept"),
    [
        pytest.param(2, 1, 2, id="expired-dropped-first"),
        pytest.param(0, 3, 1, id="all-fresh-cleared"),
    ],
)
def test_memory_stays_bounded(expired: int, fresh: int, kept: int) -> None:
    """At the limit, expired keys are dropped; if that is not enough, all are."""
    memory = FailureMemory(5.0, limit=3)
    for i in range(expired):
        memory.remember(f"old{i}", OriginError("x"), T0 - 10)
    for i in range(fresh):
        memory.remember(f"new{i}", OriginError("x"), T0)
    memory.remember("last", OriginError("x"), T0)
    assert len(memory) == kept
    assert memory.recall("last", T0) is not None
