"""Time order within an audit chain: no event more than the clock skew before the newest.

Events carry RFC 3339 UTC times (``2026-11-22T10:00:00.123Z``). Several threads append
to one chain, so times may interleave a little; a time more than ``MAX_CLOCK_SKEW_S``
(300 s) before the newest earlier time of the chain means a clock went back, and is
refused by the writer and named by the verifier. Both compare whole seconds: the first
19 bytes of the time (``YYYY-MM-DDTHH:MM:SS``), whose byte order is time order, so the
hot path needs no parsing: only an event older than the newest one is measured.
"""

from __future__ import annotations

from datetime import datetime

from service.chain.core import MAX_CLOCK_SKEW_S

_TIME_KEY = b'"time":"'


def event_time(event: bytes) -> bytes:
    """The ``time`` of an encoded event (its last member, as ``fast_encode`` sorts keys).

    Returns:
        The time's bytes, or ``b""`` when the event has no such last member.
    """
    at = event.rfind(_TIME_KEY)
    if at < 0 or not event.endswith(b'"}'):
        return b""
    return event[at + len(_TIME_KEY) : -2]


class TimeFloor:
    """The newest event second of a chain; admits events not more than the skew before it.

    An event at or after the newest second costs one bytes comparison; only an event
    out of order (another thread's, a moment late) has its distance measured.

    Args:
        skew_s: how many seconds an event may lie before the newest one.
    """

    def __init__(self, skew_s: int = MAX_CLOCK_SKEW_S) -> None:
        self.skew_s = skew_s
        self.newest = b""

    def admit(self, when: bytes) -> bool:
        """Fold in one event time; False when it is more than the skew before the newest."""
        second = when[:19]
        if len(second) != 19:
            return False
        if second >= self.newest:
            self.newest = second
            return True
        try:
            behind = datetime.fromisoformat(self.newest.decode()) - datetime.fromisoformat(
                second.decode()
            )
        except ValueError:
            return False
        return behind.total_seconds() <= self.skew_s

    def refusal(self, when: bytes) -> str:
        """Why :meth:`admit` refused ``when`` (for an error message)."""
        return (
            f"event time {when.decode(errors='replace')!r} is more than {self.skew_s} s "
            f"before the chain's newest event time ({self.newest.decode()}Z): time went back "
            "beyond the allowed clock skew"
        )
