"""What happens to a reminder fire whose handler raises: `RetryPolicy`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from ._duration import Duration, positive_duration

__all__ = ["DEFAULT_RETRY", "RetryPolicy", "retry_policy"]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often a reminder fire whose handler raised is delivered again, and how long apart.

    A failed fire is delivered again (with the same `fire_count`) after `backoff`, then after
    twice that, doubling up to `max_backoff`. Once `max_attempts` deliveries have failed, the fire
    is dead-lettered: kept in the store with its error (see `ReminderService.dead_letters`), and
    the reminder goes on with its next tick. Attempts are counted in the store, so a restart does
    not reset them.

    `RetryPolicy()` is what a reminder gets when none is given: retried for ever, 1 s doubling
    to 60 s.

    Attributes:
        max_attempts: deliveries in all (the first included) before the fire is dead-lettered;
            None to retry for ever.
        backoff: the wait before the first retry (any duration: "2s", 0.5, a timedelta).
        max_backoff: the longest wait between retries; at least `backoff`.

    Raises:
        ValueError: naming the field and the value, when `max_attempts` is not None or an int of
            at least 1, a duration is not a positive duration, or `max_backoff` < `backoff`.
    """

    max_attempts: int | None = None
    backoff: Duration = timedelta(seconds=1)
    max_backoff: Duration = timedelta(seconds=60)

    def __post_init__(self) -> None:
        attempts = self.max_attempts
        if attempts is not None and (
            isinstance(attempts, bool) or not isinstance(attempts, int) or attempts < 1
        ):
            raise ValueError(
                f"RetryPolicy max_attempts {attempts!r} must be None (retry for ever) or an int "
                "of at least 1"
            )
        backoff = _duration(self.backoff, "backoff")
        max_backoff = _duration(self.max_backoff, "max_backoff")
        if max_backoff < backoff:
            raise ValueError(
                f"RetryPolicy max_backoff {self.max_backoff!r} is shorter than backoff "
                f"{self.backoff!r}; it must be at least as long"
            )
        # Stored as timedeltas: two policies given "1s" and 1.0 are equal.
        object.__setattr__(self, "backoff", backoff)
        object.__setattr__(self, "max_backoff", max_backoff)

    @property
    def backoff_delta(self) -> timedelta:
        """`backoff` as a timedelta."""
        assert isinstance(self.backoff, timedelta)
        return self.backoff

    @property
    def max_backoff_delta(self) -> timedelta:
        """`max_backoff` as a timedelta."""
        assert isinstance(self.max_backoff, timedelta)
        return self.max_backoff

    def delay(self, failures: int) -> float:
        """Seconds to wait before delivering a fire again after its `failures`-th failure."""
        first = self.backoff_delta.total_seconds()
        longest = self.max_backoff_delta.total_seconds()
        # Capped before the power: 2 ** 5000 as a float overflows.
        return float(min(longest, first * 2 ** min(failures - 1, 64)))

    @staticmethod
    def of(value: Any) -> RetryPolicy:
        """`value` as a policy: a `RetryPolicy` as it is, or a mapping of its fields (as a
        facet config gives it: `{"max_attempts": 5, "backoff": "2s"}`).

        Raises:
            ValueError: `value` is neither, a mapping has a key that is not a field, or a
                field's value is refused.
        """
        return retry_policy(value)

    def exhausted(self, failures: int) -> bool:
        """Whether a fire that failed `failures` times is dead-lettered rather than retried."""
        return self.max_attempts is not None and failures >= self.max_attempts


def _duration(value: Any, field: str) -> timedelta:
    try:
        return positive_duration(value)
    except (TypeError, ValueError) as error:
        raise ValueError(f"RetryPolicy {field}: {error}") from None


DEFAULT_RETRY = RetryPolicy()
"""The policy of a reminder registered without one: retry for ever, 1 s doubling to 60 s."""

_KEYS = ("max_attempts", "backoff", "max_backoff")


def retry_policy(value: Any) -> RetryPolicy:
    """`value` as a `RetryPolicy`: one already, or a mapping of its fields (a facet config).

    Raises:
        ValueError: `value` is neither, a mapping has a key that is not a field, or a field's
            value is refused by `RetryPolicy`.
    """
    if isinstance(value, RetryPolicy):
        return value
    if isinstance(value, Mapping):
        unknown = sorted(str(key) for key in value if key not in _KEYS)
        if unknown:
            raise ValueError(f"retry has no key {unknown[0]!r}; accepted keys: {', '.join(_KEYS)}")
        return RetryPolicy(**value)
    raise ValueError(
        f"retry {value!r} must be a RetryPolicy or a mapping with the keys {', '.join(_KEYS)}"
    )
