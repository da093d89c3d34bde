"""Layer 2: a stream entry as a worker took it: decoded, and whether its id
is claimed for it.

Each call claims its request id (an event delivery, its marker) before it runs
(``Transport.claim_runs``: an id runs at most once). The thread that reads a
batch decodes its entries and claims them all in one round trip
(``Executor.take``); a lone entry is claimed by the thread that runs it.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..protocol import Event, Request, now_ms


@dataclass
class Taken:
    """A stream entry decoded (``message`` None: rejected, with ``problem``)
    and whether its id was claimed for this entry (None: not asked yet)."""

    raw: bytes
    message: Request | Event | None
    problem: str = ""
    granted: bool | None = None

    def marker(self) -> str | None:
        """The id to claim: the request's id, or the event delivery's marker."""
        if isinstance(self.message, Event):
            return self.message.marker
        return self.message.id if self.message is not None else None

    def ttl_ms(self, event_ttl: float) -> int:
        """How long the claim must last: to the deadline (or the event's expiry), plus 1 s."""
        if isinstance(self.message, Event):
            return self.message.expiry(int(event_ttl * 1000)) - now_ms() + 1000
        assert self.message is not None
        return self.message.deadline - now_ms() + 1000
