"""One conformance suite, run against every livechat backend a bot can choose.

Each test runs the real server on 127.0.0.1 with a webhook bot (a real HTTP server that
records every event it gets) and one human side: the built-in desk with an agent on the
WebSocket protocol, a helpdesk on the generic webhook platform (tests/fakes/helpdesk.py)
acting through Switchover's HTTP API, a Gorgias account (tests/fakes/gorgias.py) whose
agents work on tickets, or Chatwoot's agents in an API inbox (tests/fakes/chatwoot.py, whose
webhooks reach Switchover's Chatwoot route). The user is the Python client. Whatever the
backend, the guarantees are the same: the bot hears nothing during a session, messages pass
both ways in order, the sign-off takes two steps, the session ends once with its reason, and
the bot is told at the end.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any, Protocol

import httpx
import pytest
import trio

from actors import SESSION_END, SESSION_START
from transport.client import AgentClient, Frame, UserClient, connect_agent, connect_user
from transport.config import from_mapping
from transport.servers.runtime import RunningServer, run_server

from .fakes import chatwoot as fake_chatwoot
from .fakes import gorgias as fake_gorgias
from .fakes import helpdesk as fake_helpdesk
from .fakes.asgi_server import serving
from .fakes.webhook_bot import SECRET as BOT_SECRET
from .fakes.webhook_bot import BotServer

ALICE_TOKEN = "alice-token-for-conformance"
BOB_TOKEN = "bob-token-for-conformance-too"
BACKENDS = ("desk", "webhook", "gorgias", "chatwoot")


def _entry(sender: str, **content: Any) -> Callable[[Frame], bool]:
    def check(frame: Frame) -> bool:
        if frame["type"] != "entry" or frame["sender"] != sender:
            return False
        return all(frame["content"].get(k) == v for k, v in content.items())

    return check


def _notice(code: str) -> Callable[[Frame], bool]:
    return lambda f: _entry("system", code=code)(f) and f["content_type"] == "notice"


class HumanSide(Protocol):
    """The people who answer, whatever backend they use. ``end_reason``: what the bot is
    told when they end a session; ``hears_payloads``: a button the user clicks reaches
    them as a message (its text or payload); ``shows_files``: 1 when a file the user sends
    is among the texts they read (as a line with its link), 0 when it comes apart."""

    end_reason: str
    hears_payloads: bool
    shows_files: int

    async def picks_up(self, conversation_id: str) -> None: ...

    async def says(self, text: str) -> None: ...

    async def signs_off(self) -> None: ...

    async def ends_session(self) -> None: ...

    async def transfers(self) -> str:
        """Hand the chat to another person of the same side; return their name. What the
        side says next comes from them."""
        ...

    async def heard(self, count: int) -> list[str]:
        """The first ``count`` things the user wrote in the session, once all arrived."""
        ...

    async def told_end(self) -> str:
        """The reason the human side was given when the session ended."""
        ...


class DeskAgent:
    end_reason = "agent_closed"
    hears_payloads = False
    shows_files = 0

    def __init__(self, agent: AgentClient, colleague: AgentClient | None = None) -> None:
        self.agent = agent
        self.colleague = colleague
        self.conversation_id = ""
        self.texts: list[str] = []
        self.ends: list[str] = []
        self.picked = False

    def _note(self, frame: Frame) -> None:
        """Keep what the agent was shown of the user, and of the end."""
        if frame["type"] == "transcript" and frame["conversation_id"] == self.conversation_id:
            self.picked = True
            self.texts = [
                e["content"]["text"]
                for e in frame["entries"]
                if e["sender"] == "user" and e.get("session_id") and e["content_type"] == "text"
            ]
        elif _entry("user")(frame) and frame["content_type"] == "text":
            self.texts.append(frame["content"]["text"])
        elif _notice("session_ended")(frame) or _notice("session_expired")(frame):
            self.ends.append(frame["content"]["reason"])

    async def _until(self, done: Callable[[], bool]) -> None:
        with trio.fail_after(10):
            while not done():
                self._note(await self.agent.next_frame(timeout=10))

    async def picks_up(self, conversation_id: str) -> None:
        self.conversation_id = conversation_id
        await self.agent.set_presence("online")
        await self._until(lambda: self.picked)

    async def says(self, text: str) -> None:
        await self.agent.say(self.conversation_id, text)

    async def signs_off(self) -> None:
        await self.agent.sign_off(self.conversation_id)

    async def ends_session(self) -> None:
        await self.agent.end(self.conversation_id)

    async def transfers(self) -> str:
        assert self.colleague is not None
        await self.colleague.set_presence("online")
        await self.agent.transfer(self.conversation_id, "bob")
        self.agent, self.picked = self.colleague, False
        await self._until(lambda: self.picked)
        return "Bob"

    async def heard(self, count: int) -> list[str]:
        await self._until(lambda: len(self.texts) >= count)
        return self.texts[:count]

    async def told_end(self) -> str:
        await self._until(lambda: bool(self.ends))
        return self.ends[0]


class HelpdeskSide:
    end_reason = "ticket_closed"
    hears_payloads = False
    shows_files = 0

    def __init__(self, desk: fake_helpdesk.Helpdesk, agent: fake_helpdesk.HelpdeskAgent) -> None:
        self.desk = desk
        self.agent = agent
        self.session_id = ""

    async def picks_up(self, conversation_id: str) -> None:
        requested = await self.desk.wait_for(
            lambda e: e["type"] == "session.requested" and e["conversation_id"] == conversation_id
        )
        self.session_id = requested["session_id"]
        await self.agent.act(self.session_id, "accept")

    async def says(self, text: str) -> None:
        await self.agent.say(self.session_id, text)

    async def signs_off(self) -> None:
        await self.agent.act(self.session_id, "sign_off")

    async def transfers(self) -> str:
        to = {"id": "h-9", "name": "Ines"}
        await self.agent.act(self.session_id, "transfer", to=to)
        self.agent.agent_id, self.agent.name = "h-9", "Ines"
        return "Ines"

    async def ends_session(self) -> None:
        await self.agent.act(self.session_id, "release", reason="ticket_closed")

    async def heard(self, count: int) -> list[str]:
        with trio.fail_after(10):
            while len(self.desk.texts(self.session_id)) < count:
                await self.desk.wait_for_calls(self.desk.calls + 1)
        return self.desk.texts(self.session_id)[:count]

    async def told_end(self) -> str:
        ended = await self.desk.wait_for(
            lambda e: e["type"] == "session.ended" and e["session_id"] == self.session_id
        )
        reason: str = ended["data"]["reason"]
        return reason


class GorgiasSide:
    """Gorgias's agents: assigning the ticket picks the session up, closing it ends it."""

    end_reason = "ticket_closed"
    hears_payloads = False
    shows_files = 1

    def __init__(self, account: fake_gorgias.Gorgias) -> None:
        self.account = account
        self.ticket_id = 0
        self.agent = 7

    async def picks_up(self, conversation_id: str) -> None:
        def ticket() -> int:
            for found in self.account.tickets.values():
                if found["meta"]["switchover"]["conversation_id"] == conversation_id:
                    return int(found["id"])
            return 0

        self.ticket_id = await self.account.wait_until(ticket)
        await self.account.assign(self.ticket_id)

    async def says(self, text: str) -> None:
        await self.account.reply(self.ticket_id, text, self.agent)

    async def transfers(self) -> str:
        self.agent = 9
        await self.account.assign(self.ticket_id, 9)
        return "Ines"

    async def signs_off(self) -> None:
        await self.account.sign_off(self.ticket_id)

    async def ends_session(self) -> None:
        await self.account.close(self.ticket_id)

    async def heard(self, count: int) -> list[str]:
        def texts() -> list[str]:
            said = self.account.customer_texts(self.ticket_id)
            return [t for t in said if not t.startswith("[button]")]

        await self.account.wait_until(lambda: len(texts()) >= count)
        return texts()[:count]

    async def told_end(self) -> str:
        ticket = self.account.tickets[self.ticket_id]
        notes = await self.account.wait_until(
            lambda: ticket["status"] == "closed" and self.account.notes(self.ticket_id)
        )
        [note] = notes
        assert note.startswith("Livechat session ended. Reason: ")
        return str(note.rpartition(" ")[2])


class ChatwootSide:
    """Chatwoot's agents: picking up is being assigned, ending is resolving."""

    end_reason = "resolved"
    hears_payloads = True
    shows_files = 1

    def __init__(self, chatwoot: fake_chatwoot.Chatwoot) -> None:
        self.chatwoot = chatwoot
        self.cid = 0
        self.agent = fake_chatwoot.HANA

    async def picks_up(self, conversation_id: str) -> None:
        found = await self.chatwoot.wait_until(
            lambda: self.chatwoot.conversation_of(conversation_id)
        )
        self.cid = found["id"]
        await self.chatwoot.assign(self.cid, fake_chatwoot.HANA)

    async def says(self, text: str) -> None:
        await self.chatwoot.agent_reply(self.cid, text, self.agent)

    async def transfers(self) -> str:
        self.agent = fake_chatwoot.INES
        await self.chatwoot.assign(self.cid, fake_chatwoot.INES)
        return "Ines"

    async def signs_off(self) -> None:
        await self.chatwoot.agent_reply(self.cid, fake_chatwoot.SIGN_OFF)

    async def ends_session(self) -> None:
        await self.chatwoot.resolve(self.cid)

    async def heard(self, count: int) -> list[str]:
        heard = await self.chatwoot.wait_until(
            lambda: (
                len(self.chatwoot.incoming(self.cid)) >= count and self.chatwoot.incoming(self.cid)
            )
        )
        texts: list[str] = heard[:count]
        return texts

    async def told_end(self) -> str:
        def ended() -> str | None:
            conversation = self.chatwoot.conversations[self.cid]
            notes = [n for n in self.chatwoot.notes(self.cid) if "reason: " in n]
            if conversation["status"] != "resolved" or not notes:
                return None
            return notes[-1].split("reason: ")[1].rstrip(").")

        reason: str = await self.chatwoot.wait_until(ended)
        return reason


class World:
    def __init__(
        self, server: RunningServer, bot: BotServer, human: HumanSide, backend: str
    ) -> None:
        self.server = server
        self.bot = bot
        self.human = human
        self.backend = backend

    def user(self) -> Any:
        return connect_user(self.server.ws_url, bot_id="shop", metadata={"name": "Uma"})

    def bot_texts(self) -> list[str]:
        return [
            e["content"]["content"].get("text") or e["content"]["content"].get("payload")
            for e in self.bot.events
        ]


def _config(backend: str, bot_url: str, helpdesk_url: str, **settings: Any) -> Any:
    livechat: dict[str, Any] = {"kind": backend}
    if backend == "chatwoot":
        # Webhooks alone must carry it: the reconcile comes too late to help.
        livechat["options"] = {
            "base_url": helpdesk_url,
            "account_id": fake_chatwoot.ACCOUNT_ID,
            "inbox_id": fake_chatwoot.INBOX_ID,
            "api_token": fake_chatwoot.API_TOKEN,
            "webhook_secret": fake_chatwoot.SECRET,
            "reconcile_every": 3600.0,
            "max_backoff": 0.2,
        }
    if backend == "webhook":
        livechat["options"] = {
            "url": helpdesk_url + "/events",
            "secret": fake_helpdesk.SECRET,
            "api_token": fake_helpdesk.API_TOKEN,
            "max_backoff": 0.2,
            "unreachable_after": 0.3,
        }
    elif backend == "gorgias":
        livechat["options"] = {
            "base_url": helpdesk_url,
            "email": fake_gorgias.EMAIL,
            "api_key": fake_gorgias.API_KEY,
            "webhook_token": fake_gorgias.WEBHOOK_TOKEN,
            "max_backoff": 0.2,
            "unreachable_after": 0.3,
        }
    return from_mapping(
        {
            "listeners": {"ws_port": 0, "http_port": 0, "shutdown_timeout": 2.0},
            "bots": {
                "shop": {
                    "adapter": "webhook",
                    "options": {"url": bot_url, "secret": BOT_SECRET},
                    "settings": {"session_timeout": 3600.0, **settings},
                    "livechat": livechat,
                }
            },
            "agents": {
                "alice": {"name": "Alice", "token": ALICE_TOKEN, "bots": ["shop"]},
                "bob": {"name": "Bob", "token": BOB_TOKEN, "bots": ["shop"]},
            },
        }
    )


@asynccontextmanager
async def world_of(backend: str, **settings: Any) -> AsyncIterator[World]:
    bot = BotServer()
    desk = fake_helpdesk.Helpdesk()
    account = fake_gorgias.Gorgias()
    chatwoot = fake_chatwoot.Chatwoot()
    helpdesks: dict[str, Any] = {"gorgias": account, "chatwoot": chatwoot}
    async with AsyncExitStack() as stack:
        bot_url = await stack.enter_async_context(serving(bot))
        helpdesk_url = await stack.enter_async_context(serving(helpdesks.get(backend, desk)))
        await stack.enter_async_context(chatwoot.delivering())
        nursery = await stack.enter_async_context(trio.open_nursery())
        config = _config(backend, bot_url, helpdesk_url, **settings)
        server: RunningServer = await nursery.start(
            lambda task_status: run_server(config, handle_signals=False, task_status=task_status)
        )
        human: HumanSide
        if backend == "desk":
            agent = await stack.enter_async_context(connect_agent(server.ws_url, ALICE_TOKEN))
            bob = await stack.enter_async_context(connect_agent(server.ws_url, BOB_TOKEN))
            human = DeskAgent(agent, bob)
        elif backend == "gorgias":
            account.integrate(f"{server.http_url}/v1/livechat/shop/gorgias")
            human = GorgiasSide(account)
        elif backend == "chatwoot":
            chatwoot.set_webhook_url(f"{server.http_url}/v1/livechat/shop/chatwoot")
            human = ChatwootSide(chatwoot)
        else:
            http = await stack.enter_async_context(httpx.AsyncClient())
            url = f"{server.http_url}/v1/livechat/shop/actions"
            human = HelpdeskSide(desk, fake_helpdesk.HelpdeskAgent(http, url))
        try:
            yield World(server, bot, human, backend)
        finally:
            server.stop()


async def _handed_over(world: World, user: UserClient) -> None:
    await user.say_text("hello bot")
    await world.bot.wait_for_calls(1)
    await user.click(SESSION_START)
    await user.wait_for(_notice("session_started"))


@pytest.mark.parametrize("backend", BACKENDS)
async def test_handoff_messages_both_ways_in_order_and_the_bot_hears_nothing(backend: str) -> None:
    async with world_of(backend) as world, world.user() as user:
        await _handed_over(world, user)
        # Written while waiting: kept for the human side, never for the bot.
        await user.say_text("anyone there?")
        await user.say("payload", {"payload": "MENU"})
        await user.say("image", {"url": "https://files.example/receipt.png"})
        await user.typing()
        await world.human.picks_up(user.conversation_id)
        await user.wait_for(_notice("agent_joined"))
        for n in range(5):
            await user.say_text(f"user {n}")
        clicked = ["MENU"] if world.human.hears_payloads else []
        heard = await world.human.heard(6 + len(clicked) + world.human.shows_files)
        # A helpdesk that shows messages as text shows the file as a line with its link.
        assert len([t for t in heard if "receipt.png" in t]) == world.human.shows_files
        assert [t for t in heard if "receipt.png" not in t] == [
            "anyone there?",
            *clicked,
            *[f"user {n}" for n in range(5)],
        ]
        for n in range(5):
            await world.human.says(f"agent {n}")
        for n in range(5):
            await user.wait_for(_entry("agent", text=f"agent {n}"))
        # Only what came before the session reached the bot.
        assert world.bot_texts() == ["hello bot"]


@pytest.mark.parametrize("backend", BACKENDS)
async def test_the_sign_off_the_user_ignores_then_confirms(backend: str) -> None:
    async with world_of(backend) as world, world.user() as user:
        await _handed_over(world, user)
        await world.human.picks_up(user.conversation_id)
        await world.human.signs_off()
        offer = await user.wait_for(lambda f: _entry("system")(f) and f.get("metadata"))
        assert offer["metadata"]["sign_off"] is True
        # Anything else keeps the session going.
        await user.say_text("one more thing")
        assert "one more thing" in await world.human.heard(1)
        await world.human.says("sure")
        await user.wait_for(_entry("agent", text="sure"))
        await user.click(SESSION_END)
        await user.wait_for(_notice("session_ended"))
        assert await world.human.told_end() == "user_ended"
        ended = await _bot_event(world, SESSION_END)
        assert ended["metadata"]["reason"] == "user_ended"
        assert world.bot_texts() == ["hello bot", SESSION_END]


@pytest.mark.parametrize("backend", BACKENDS)
async def test_the_user_ends_alone_while_waiting(backend: str) -> None:
    async with world_of(backend) as world, world.user() as user:
        await _handed_over(world, user)
        if backend != "desk":
            # The platform has the request before the user leaves.
            await world.human.picks_up(user.conversation_id)
        await user.click(SESSION_END)
        await user.wait_for(_notice("session_ended"))
        ended = await _bot_event(world, SESSION_END)
        assert ended["metadata"]["reason"] == "user_ended"
        if backend != "desk":
            assert await world.human.told_end() == "user_ended"


@pytest.mark.parametrize("backend", BACKENDS)
async def test_the_human_side_closes_first(backend: str) -> None:
    async with world_of(backend) as world, world.user() as user:
        await _handed_over(world, user)
        await world.human.picks_up(user.conversation_id)
        await world.human.ends_session()
        ended_notice = await user.wait_for(_notice("session_ended"))
        assert ended_notice["content"]["reason"] == world.human.end_reason
        ended = await _bot_event(world, SESSION_END)
        assert ended["metadata"]["reason"] == world.human.end_reason
        # Back with the bot.
        await user.say_text("hi again")
        await world.bot.wait_for_calls(3)
        assert world.bot_texts()[-1] == "hi again"


@pytest.mark.parametrize("backend", BACKENDS)
async def test_idle_expiry_is_pushed_to_the_bot_and_told_to_the_human_side(backend: str) -> None:
    async with world_of(backend, session_timeout=1.0) as world, world.user() as user:
        await _handed_over(world, user)
        await world.human.picks_up(user.conversation_id)
        await user.wait_for(_notice("session_expired"), timeout=10)
        expired = await _bot_event(world, "LIVECHAT_SESSION_EXPIRED")
        assert expired["metadata"]["reason"] == "idle_timeout"
        assert await world.human.told_end() == "idle_timeout"


async def _bot_event(world: World, payload: str) -> dict[str, Any]:
    with trio.fail_after(10):
        while True:
            for event in world.bot.events:
                if event["content"]["content"].get("payload") == payload:
                    return event
            await world.bot.wait_for_calls(world.bot.calls + 1)


@pytest.mark.parametrize("backend", BACKENDS)
async def test_a_transfer_tells_the_user_who_now_answers(backend: str) -> None:
    async with world_of(backend) as world, world.user() as user:
        await _handed_over(world, user)
        await world.human.picks_up(user.conversation_id)
        await user.wait_for(_notice("agent_joined"))
        name = await world.human.transfers()
        joined = await user.wait_for(_notice("agent_joined"))
        assert joined["content"]["name"] == name
        await world.human.says(f"{name} here")
        said = await user.wait_for(_entry("agent", text=f"{name} here"))
        assert said["sender"] == "agent"
        await user.say_text("thanks")
        assert "thanks" in await world.human.heard(1)
        assert world.bot_texts() == ["hello bot"]
