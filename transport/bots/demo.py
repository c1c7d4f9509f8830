"""The built-in demo bot, shaped like CSML Studio's livechat example flow.

It welcomes a user whose chat window opens (the widget's ``CONVERSATION_START`` payload),
greets, offers a "Talk to a human" button whose payload is ``LIVECHAT_SESSION_START`` (the
one thing that opens a livechat session), thanks the user when a session ends with
``LIVECHAT_SESSION_END``, apologises when one expires with ``LIVECHAT_SESSION_EXPIRED`` (naming
an agent only when the event's ``agent_id`` says one held the session), and answers a few
plain messages itself. It keeps no state, so it survives restarts and serves any
number of conversations; it uses the same :class:`actors.Bot` interface as any remote bot.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, Final

from actors import SESSION_END, SESSION_EXPIRED, SESSION_START, BotEvent, Content

HUMAN_BUTTON: Final = "Talk to a human"
HOURS_PAYLOAD: Final = "DEMO_HOURS"
HELP_PAYLOAD: Final = "DEMO_HELP"
WELCOME_PAYLOAD: Final = "CONVERSATION_START"
"""What the chat widget sends as the user when its window first opens on a new conversation."""

GREETING: Final = "Hi! I'm Switchover's demo bot."
WELCOME: Final = (
    "Welcome! I'm Switchover's demo bot. Ask me a question, or talk to a human from our team."
)
QUESTION: Final = "What can I do for you?"
HELP: Final = (
    'I can tell you our opening "hours", show this "help", or put you through to a human '
    "agent with the button below."
)
HOURS: Final = "Our agents answer Monday to Friday, 9:00 to 18:00 UTC."
THANKS: Final = "Thanks for chatting with our team! I'm back if you need anything else."
LEFT_QUEUE: Final = "All right, you are out of the queue. I'm here if you need anything else."
APOLOGY: Final = (
    "Sorry, your conversation with our agent timed out because nobody wrote for a while. "
    "I'm here again; ask for a human whenever you like."
)
NOBODY_CAME: Final = (
    "Sorry, nobody from our team could take your conversation in time. "
    "I'm here again; ask for a human whenever you like."
)
NOT_UNDERSTOOD: Final = "I'm only a demo bot, so I didn't get that."
TEXT_ONLY: Final = "I can only read text, but a human agent can look at that for you."
THANKED: Final = "You're welcome!"

_GREETINGS = re.compile(r"\b(hi|hello|hey|hallo|bonjour|good (morning|afternoon|evening))\b")
_HOURS = re.compile(r"\b(hours?|open|opening|when)\b")
_HELP = re.compile(r"\b(help|menu|options?)\b")
_HUMAN = re.compile(r"\b(human|agent|person|someone|operator)\b")
_THANKS = re.compile(r"\b(thanks|thank you|cheers)\b")


def menu(title: str = QUESTION) -> Content:
    """The question the demo bot ends most replies with: a human, the hours, or help."""
    return Content.question(
        title,
        [(HUMAN_BUTTON, SESSION_START), ("Opening hours", HOURS_PAYLOAD), ("Help", HELP_PAYLOAD)],
    )


class DemoBot:
    """Implements :class:`actors.Bot` in-process."""

    async def on_event(self, event: BotEvent) -> Sequence[Content]:
        return reply_to(event.content, event.metadata)


def _agent_held(metadata: Mapping[str, Any]) -> bool:
    """Whether an agent held the session that just ended. An ending without ``agent_id``
    (from an older server) is taken to have had one, as before the key existed."""
    return "agent_id" not in metadata or metadata["agent_id"] is not None


def reply_to(content: Content, metadata: Mapping[str, Any] | None = None) -> list[Content]:
    """What the demo bot answers to one piece of content (pure, so it is easy to test);
    ``metadata`` is the event's (it says whether an ended session ever had an agent)."""
    metadata = metadata or {}
    if content.content_type == "payload":
        payload = content.content.get("payload")
        if payload == WELCOME_PAYLOAD:
            return [Content.text(WELCOME), menu()]
        if payload == SESSION_END:
            said = THANKS if _agent_held(metadata) else LEFT_QUEUE
            return [Content.text(said), menu("Anything else?")]
        if payload == SESSION_EXPIRED:
            said = APOLOGY if _agent_held(metadata) else NOBODY_CAME
            return [Content.text(said), menu("Anything else?")]
        if payload == HOURS_PAYLOAD:
            return [Content.text(HOURS), menu("Anything else?")]
        if payload == HELP_PAYLOAD:
            return [Content.text(HELP), menu()]
        return [Content.text(NOT_UNDERSTOOD), menu()]
    text = content.text_value
    if text is None:
        return [Content.text(TEXT_ONLY), menu()]
    said = text.lower()
    if _HUMAN.search(said):
        return [menu("Sure: click the button to reach a human.")]
    if _HOURS.search(said):
        return [Content.text(HOURS), menu("Anything else?")]
    if _HELP.search(said):
        return [Content.text(HELP), menu()]
    if _THANKS.search(said):
        return [Content.text(THANKED)]
    if _GREETINGS.search(said):
        return [Content.text(GREETING), menu()]
    return [Content.text(NOT_UNDERSTOOD), Content.text(HELP), menu()]
