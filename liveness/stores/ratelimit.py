"""The rate-limit rule, written once over a store's atomic primitives.

Every backend (memory, SQLite, PostgreSQL, Redis) gets :meth:`RateLimitRules.record_failure`
and :meth:`RateLimitRules.check_rate_limit` from here; a backend only implements the
primitives of :class:`liveness.stores.base.StorePrimitives` (``add_failure``,
``count_failures``, ``get_block``, ``set_block``).

The rule: ``max_failures`` failures of one account within ``window`` seconds block it for
``cooldown`` seconds. The failure that trips the limit is remembered (its id), and failures up
to it never count towards the next block, so that a person who waited out a cool-down starts
again from zero instead of being blocked again by the first failure after it.

Concurrency: the three steps of :func:`record_failure` are separate atomic operations, not
one transaction. What that allows, and why it is safe:

* Two failures racing at the limit may both see ``max_failures`` and both block; both
  blocks end at about the same time and :meth:`set_block` keeps the later trigger (largest
  id), so failures up to both triggers are forgotten, as if they had come one after another.
* A failure that reads the block of a failure recorded a moment earlier counts only failures
  after that trigger, exactly as it would have done one millisecond later.
* No failure is ever lost: ``add_failure`` is one atomic append.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import InputError
from .base import StorePrimitives, rate_limited

__all__ = ["RateLimit", "RateLimitRules", "check_rate_limit", "record_failure"]


@dataclass(frozen=True)
class RateLimit:
    """``max_failures`` failures within ``window`` seconds block the account for
    ``cooldown`` seconds. Failures before a block do not count towards the next one."""

    max_failures: int = 5
    window: float = 180.0
    cooldown: float = 300.0

    def __post_init__(self) -> None:
        if self.max_failures < 1 or self.window <= 0 or self.cooldown <= 0:
            raise InputError(f"invalid rate limit {self!r}")


def record_failure(
    store: StorePrimitives, limits: RateLimit, account: str, now: float
) -> float | None:
    """Append a failure for ``account`` at ``now``; if it makes ``limits.max_failures``
    within ``limits.window`` (after the previous block's trigger), block the account until
    ``now + limits.cooldown`` and return that time, else None."""
    fid = store.add_failure(account, now)
    block = store.get_block(account)
    after = block.trigger_id if block is not None else 0
    if store.count_failures(account, after, now - limits.window) < limits.max_failures:
        return None
    until = now + limits.cooldown
    store.set_block(account, until, fid)
    return until


def check_rate_limit(store: StorePrimitives, account: str, now: float) -> None:
    """Raise :class:`~liveness.sessions.RateLimitedError` while ``account`` is blocked."""
    block = store.get_block(account)
    rate_limited(block.until if block is not None else None, now)


class RateLimitRules:
    """Mixin for a backend with the primitives and a ``limits`` attribute: the
    :class:`~liveness.stores.base.SessionStore` rate-limit methods, from the rule above."""

    limits: RateLimit

    def record_failure(self, account: str, now: float) -> float | None:
        """Count a failed attempt; returns the time the account is blocked until, if this
        failure blocked it."""
        return record_failure(self, self.limits, account, now)  # type: ignore[arg-type]

    def check_rate_limit(self, account: str, now: float) -> None:
        """:class:`~liveness.sessions.RateLimitedError` while the account is blocked."""
        check_rate_limit(self, account, now)  # type: ignore[arg-type]
