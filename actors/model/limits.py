"""The bounds every conversation keeps, so no client can make one grow without limit."""

from __future__ import annotations

import attrs


@attrs.frozen
class ConversationLimits:
    """Per-conversation bounds.

    ``bot_queue``: bot events that may wait for one conversation's bot before the user's
    next message is refused ``overloaded``. ``message_ids``: client message ids remembered
    per conversation, so a resend is answered with its first ``ack`` and stored once.
    ``transcript_tail``: entries an agent is given on pickup (the rest through ``replay``).
    """

    bot_queue: int = 64
    message_ids: int = 256
    transcript_tail: int = 200
