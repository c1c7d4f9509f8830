"""Embed Switchover's core in a program: one bot, one agent, one whole livechat session.

Run it with ``python docs/examples/embed.py``. Nothing here opens a socket: the user and the
agent are two sinks that print what they are told, and the program plays both of them.
"""

from __future__ import annotations

from collections.abc import Sequence

import trio

from actors import (
    SESSION_END,
    SESSION_START,
    AgentProfile,
    AgentSays,
    BotBinding,
    BotEvent,
    BotSettings,
    Content,
    Delivery,
    Desk,
    Entry,
    Presence,
    Transcript,
    UserSays,
    open_switchboard,
)


class HelpBot:
    """A bot: answers text, and offers a human when asked for help."""

    def __init__(self) -> None:
        self.heard: list[str] = []

    async def on_event(self, event: BotEvent) -> Sequence[Content]:
        self.heard.append(event.content.text_value or event.content.content.get("payload", ""))
        if event.content.text_value == "help":
            return [Content.question("Talk to a person?", [("Yes please", SESSION_START)])]
        return [Content.text(f"You said: {event.content.text_value}")]


class Printer:
    """A sink: ``deliver`` must never block, so it only prints and remembers."""

    def __init__(self, who: str) -> None:
        self.who = who
        self.seen: list[Delivery] = []
        self.changed = trio.Event()

    def deliver(self, item: Delivery) -> None:
        self.seen.append(item)
        self.changed.set()
        self.changed = trio.Event()
        if isinstance(item, Entry):
            print(f"  [{self.who}] #{item.seq} {item.sender.value}: {dict(item.content.content)}")
        elif isinstance(item, Transcript):
            print(f"  [{self.who}] transcript of {len(item.entries)} entries, user {item.user_id}")

    async def wait_for(self, check: object) -> None:
        assert callable(check)
        with trio.fail_after(5):
            while not any(check(item) for item in self.seen):
                await self.changed.wait()


def is_text(text: str) -> object:
    return lambda item: isinstance(item, Entry) and item.content.text_value == text


async def main() -> list[str]:
    settings = BotSettings(session_timeout=3600, end_button_label="Thanks, bye")
    desk = Desk({"helpdesk": settings}, [AgentProfile("ana", "Ana", frozenset({"helpdesk"}))])
    bot = HelpBot()
    async with open_switchboard({"helpdesk": BotBinding(bot, settings)}, {"desk": desk}) as board:
        conversation = await board.open_conversation("helpdesk", metadata={"plan": "pro"})
        conv = conversation.conversation_id
        user, agent = Printer("user"), Printer("agent")
        board.subscribe(conv, user)
        desk.attach("ana", agent)
        desk.set_presence("ana", Presence.ONLINE)

        print("The user talks to the bot:")
        await board.ask(conv, UserSays(Content.text("help")))
        await user.wait_for(lambda i: isinstance(i, Entry) and i.content.content_type == "question")

        print("The user clicks the button; Ana picks the session up:")
        await board.ask(conv, UserSays(Content.payload(SESSION_START)))
        await agent.wait_for(lambda i: isinstance(i, Transcript))
        await board.ask(conv, UserSays(Content.text("my invoice is wrong")))
        await agent.wait_for(is_text("my invoice is wrong"))
        await board.ask(conv, AgentSays("ana", Content.text("Fixed it. LIVECHAT_SESSION_END")))
        await user.wait_for(lambda i: isinstance(i, Entry) and i.metadata.get("sign_off"))

        print("The user clicks the end button; the bot takes over again:")
        await board.ask(conv, UserSays(Content.payload(SESSION_END)))
        await board.ask(conv, UserSays(Content.text("thanks")))
        await user.wait_for(is_text("You said: thanks"))
    return bot.heard


if __name__ == "__main__":
    heard = trio.run(main)
    print("The bot heard:", heard)
