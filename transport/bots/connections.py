"""Which bots are connected over WebSocket right now, how to reach them, and which events
they still have to acknowledge.

The WebSocket server registers each bot connection here after its hello and passes on the bot's
``event_ack`` frames; the connected-bot adapter (:mod:`transport.bots.connected`) hands events out
through :meth:`BotConnections.deliver`, which returns only once the bot has acknowledged the event.
It lives apart from both so that :class:`~transport.protocol.services.Services` can own one without
importing either.

The rules (docs/protocol.md, "Connected bots"):

* An event goes to the oldest open connection of its bot that takes it, and waits there for
  the bot's ``event_ack``.
* If that connection closes first, the event goes to the next open connection, or, with none
  open, waits for the bot to (re)connect: up to ``connect_wait`` seconds each time no
  connection is open. The window passing with no connection fails the event, and the bot
  counts as away: until one of its connections opens, its events fail at once instead of each
  waiting a window of its own (a conversation's queued events would otherwise fail one window
  after another).
* A connection that keeps the event ``ack_timeout`` seconds without acknowledging it fails
  the event; so does an event put on :data:`MAX_SENDS` connections that all closed before
  acknowledging it (an event that kills the bot each time must not circle for ever).
"""

from __future__ import annotations

from typing import Final, Protocol

import attrs
import trio

#: Seconds an event waits for a connection of its bot when none is open.
CONNECT_WAIT: Final = 30.0
#: Seconds a connection has to acknowledge an event once the event is queued on it.
ACK_TIMEOUT: Final = 10.0
#: Connections an event is put on at most before it fails.
MAX_SENDS: Final = 5
#: Events one bot may have awaiting acknowledgement (each conversation has at most one).
MAX_UNACKED: Final = 10_000


class FrameOutlet(Protocol):
    """A connection that takes ready-made frames without blocking."""

    def send_frame(self, text: str) -> bool:
        """Queue ``text`` for the peer; ``False`` when the connection is closing."""
        ...


class BotNotConnected(Exception):
    """An event could not be handed to its bot: no connection of the bot was open, or none
    acknowledged the event in time."""


class BotNotAcknowledging(BotNotConnected):
    """A connection of the bot held the event for ``ack_timeout`` without acknowledging it,
    or the event was put on :data:`MAX_SENDS` connections that all closed before doing so."""


@attrs.define(eq=False)
class _Handout:
    """One event on its way to a bot: on which connection it is (``None``: on none yet, or
    that connection closed), whether the bot acknowledged it, how often it was sent."""

    event_id: str
    frame: str
    outlet: FrameOutlet | None = None
    acked: bool = False
    sends: int = 0
    sent_at: float = 0.0
    changed: trio.Event = attrs.field(factory=trio.Event)

    def wake(self) -> None:
        self.changed.set()

    async def wait_until(self, deadline: float) -> bool:
        """Wait for the next change (an ack, a connection lost or opened); ``False`` if
        ``deadline`` came first. The caller checks the state again either way."""
        self.changed = trio.Event()
        with trio.move_on_at(deadline):
            await self.changed.wait()
            return True
        return False


class BotConnections:
    """Open connections per bot id, and per bot the events handed out and not yet
    acknowledged. A bot may hold several connections; events go to the oldest, so a bot's
    events stay in order while that connection lives."""

    def __init__(self, *, max_unacked: int = MAX_UNACKED) -> None:
        self._by_bot: dict[str, list[FrameOutlet]] = {}
        # bot id -> event id -> the deliveries of that event under way (nearly always one)
        self._owed: dict[str, dict[str, list[_Handout]]] = {}
        # Bots whose connect window passed with no connection, until one connects.
        self._away: set[str] = set()
        self.max_unacked = max_unacked

    def add(self, bot_id: str, outlet: FrameOutlet) -> None:
        self._by_bot.setdefault(bot_id, []).append(outlet)
        self._away.discard(bot_id)
        for handouts in self._owed.get(bot_id, {}).values():
            for handout in handouts:
                if handout.outlet is None:
                    handout.wake()

    def remove(self, bot_id: str, outlet: FrameOutlet) -> None:
        outlets = self._by_bot.get(bot_id, [])
        if outlet in outlets:
            outlets.remove(outlet)
        if not outlets:
            self._by_bot.pop(bot_id, None)
        for handouts in self._owed.get(bot_id, {}).values():
            for handout in handouts:
                if handout.outlet is outlet:
                    handout.outlet = None
                    handout.wake()

    def connected(self, bot_id: str) -> bool:
        """Whether the bot has a connection open."""
        return bool(self._by_bot.get(bot_id))

    def _send_to_any(self, bot_id: str, text: str) -> FrameOutlet | None:
        for outlet in list(self._by_bot.get(bot_id, ())):
            if outlet.send_frame(text):
                return outlet
        return None

    # -- events awaiting acknowledgement ----------------------------------------------------

    def unacknowledged(self, bot_id: str) -> list[str]:
        """The ids of the bot's events handed out (or waiting for a connection) and not yet
        acknowledged, oldest first."""
        return list(self._owed.get(bot_id, {}))

    def acknowledge(self, bot_id: str, event_id: str) -> bool:
        """The bot acknowledged ``event_id``: its delivery is complete. ``False`` when no
        event of that id awaits the bot's acknowledgement (already acknowledged, failed,
        unknown, or another bot's): nothing changes then."""
        handouts = self._owed.get(bot_id, {}).get(event_id)
        if not handouts or all(handout.acked for handout in handouts):
            return False
        for handout in handouts:
            handout.acked = True
            handout.wake()
        return True

    async def deliver(
        self,
        bot_id: str,
        event_id: str,
        frame: str,
        *,
        connect_wait: float = CONNECT_WAIT,
        ack_timeout: float = ACK_TIMEOUT,
    ) -> None:
        """Hand the event frame ``frame`` to the bot and return once the bot acknowledged
        ``event_id``, following the rules of the module docstring. Raises
        :class:`BotNotConnected` (or :class:`BotNotAcknowledging`) when it cannot."""
        owed = self._owed.setdefault(bot_id, {})
        if event_id not in owed and len(owed) >= self.max_unacked:
            raise BotNotConnected(
                f"bot {bot_id!r} already has {len(owed)} events awaiting acknowledgement"
            )
        handout = _Handout(event_id, frame)
        owed.setdefault(event_id, []).append(handout)
        try:
            await self._until_acknowledged(bot_id, handout, connect_wait, ack_timeout)
        finally:
            handouts = owed[event_id]
            handouts.remove(handout)
            if not handouts:
                del owed[event_id]
            if not owed and self._owed.get(bot_id) is owed:
                del self._owed[bot_id]

    async def _until_acknowledged(
        self, bot_id: str, handout: _Handout, connect_wait: float, ack_timeout: float
    ) -> None:
        # Set while no connection takes the event: when the bot's connect window ends.
        window_ends: float | None = None
        while not handout.acked:
            if handout.outlet is None:
                if handout.sends >= MAX_SENDS:
                    raise BotNotAcknowledging(
                        f"bot {bot_id!r} lost event {handout.event_id!r} on {MAX_SENDS} "
                        "connections without acknowledging it"
                    )
                outlet = self._send_to_any(bot_id, handout.frame)
                if outlet is None:
                    if bot_id in self._away:
                        raise BotNotConnected(
                            f"bot {bot_id!r} is away: no connection since its connect window passed"
                        )
                    if window_ends is None:
                        window_ends = trio.current_time() + connect_wait
                    if not await handout.wait_until(window_ends) and not handout.acked:
                        self._away.add(bot_id)
                        raise BotNotConnected(
                            f"bot {bot_id!r} had no open connection for {connect_wait:g} s"
                        )
                    continue
                window_ends = None
                handout.outlet = outlet
                handout.sends += 1
                handout.sent_at = trio.current_time()
            outlet = handout.outlet
            if (
                not await handout.wait_until(handout.sent_at + ack_timeout)
                and not handout.acked
                and handout.outlet is outlet
            ):
                raise BotNotAcknowledging(
                    f"bot {bot_id!r} did not acknowledge event {handout.event_id!r} "
                    f"within {ack_timeout:g} s"
                )


__all__ = [
    "ACK_TIMEOUT",
    "CONNECT_WAIT",
    "MAX_SENDS",
    "MAX_UNACKED",
    "BotConnections",
    "BotNotAcknowledging",
    "BotNotConnected",
    "FrameOutlet",
]
