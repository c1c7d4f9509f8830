"""The ``[limits]`` a server keeps per connection, per client address and per conversation."""

from __future__ import annotations

import attrs

from actors.model.limits import ConversationLimits
from transport.validators import positive_seconds, whole_number_at_least_one


@attrs.frozen
class Limits:
    """Per-connection protection. ``max_frame_bytes``: larger frames are refused.
    ``rate``/``burst``: a token bucket of frames per second per connection.
    ``max_buffered``: deliveries queued for a slow client before it is disconnected (it can
    resume by sequence number). ``hello_timeout``: seconds a new connection has to say hello.
    ``resume_token_max_age``: seconds after which a user's resume token is refused (each
    resume hands out a fresh one), so a leaked token does not open a conversation forever.
    ``auth_failures``/``auth_window`` and ``new_conversations_per_minute``/``_burst`` limit
    each client address (see transport/protocol/credentials.py). ``bot_queue``, ``message_ids``,
    ``transcript_tail``: the per-conversation bounds of
    :class:`actors.model.limits.ConversationLimits`. ``hibernate_after``: see
    :class:`actors.Switchboard`."""

    max_frame_bytes: int = 64 * 1024
    rate: float = 20.0
    burst: int = 40
    max_buffered: int = 1000
    hello_timeout: float = 10.0
    resume_token_max_age: float = attrs.field(default=30 * 24 * 3600.0, validator=positive_seconds)
    #: Failed authentications one client address may make within ``auth_window`` seconds
    #: before its hellos are refused (4429) for the rest of the window; 0: never refused.
    auth_failures: int = attrs.field(default=10, metadata={"zero_is_off": True})
    auth_window: float = attrs.field(default=60.0, validator=positive_seconds)
    #: New conversations per minute from one client address, in bursts of
    #: ``new_conversations_burst``; beyond them a new user's hello is refused (4429). 0: no limit.
    new_conversations_per_minute: float = attrs.field(default=60.0, metadata={"zero_is_off": True})
    new_conversations_burst: int = 60
    bot_queue: int = attrs.field(default=64, validator=whole_number_at_least_one)
    message_ids: int = attrs.field(default=256, validator=whole_number_at_least_one)
    transcript_tail: int = attrs.field(default=200, validator=whole_number_at_least_one)
    #: Seconds a conversation with no open session, no client and nothing owed stays in
    #: memory after its last event; then it leaves, and its next event reloads it.
    hibernate_after: float = attrs.field(default=30.0, validator=positive_seconds)

    def for_conversations(self) -> ConversationLimits:
        """The per-conversation bounds the core keeps."""
        return ConversationLimits(self.bot_queue, self.message_ids, self.transcript_tail)
