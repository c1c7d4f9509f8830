"""The Chatwoot platform when things go wrong: webhooks dropped, repeated, swapped, forged or
late, a Chatwoot that fails or throttles, private notes and Switchover's own messages coming
back, resolves from either side, the setup command, and restarts (``kill -9`` included).

Everything runs on 127.0.0.1: the real server (in-process, or as a subprocess), a webhook bot,
and the Chatwoot fake of tests/fakes/chatwoot.py. Every misbehaviour ends with the same check:
the user and the agents each have everything once, in order.
"""

from __future__ import annotations

import json
import time
import tomllib
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import httpx
import pytest
import trio

from actors import SESSION_END, SESSION_START, Content, Entry, Party
from actors.model.agent_request import AgentRequest
from actors.model.deliveries import Transcript
from transport import cli
from transport.client import UserClient, connect_user
from transport.config import from_mapping
from transport.errors import ConfigError
from transport.livechat.backends import check_platforms
from transport.livechat.chatwoot.connector import ChatwootConnector
from transport.livechat.chatwoot.options import ChatwootOptions
from transport.livechat.chatwoot.webhook import chatwoot_signature, take_webhook
from transport.livechat.platform import PlatformBackend, PlatformUnavailable
from transport.livechat.tickets import FILE_NAME, MemoryTickets, SQLiteTickets, Ticket
from transport.servers.runtime import RunningServer, run_server

from .fakes import chatwoot as fake
from .fakes.asgi_server import serving
from .fakes.webhook_bot import SECRET as BOT_SECRET
from .fakes.webhook_bot import BotServer
from .support.process import serving_process
from .test_conformance import _entry, _notice

WEBHOOK_PATH = "/v1/livechat/shop/chatwoot"


def _options(chatwoot_url: str, **options: Any) -> dict[str, Any]:
    merged = {
        "base_url": chatwoot_url,
        "account_id": fake.ACCOUNT_ID,
        "inbox_id": fake.INBOX_ID,
        "api_token": fake.API_TOKEN,
        "webhook_secret": fake.SECRET,
        "reconcile_every": 3600.0,
        "max_backoff": 0.2,
        "unreachable_after": 0.3,
        **options,
    }
    return {k: v for k, v in merged.items() if v is not None}


class Rig:
    def __init__(self, server: RunningServer, chatwoot: fake.Chatwoot, bot: BotServer) -> None:
        self.server = server
        self.chatwoot = chatwoot
        self.bot = bot

    @property
    def backend(self) -> PlatformBackend:
        backend = self.server.services.board.backends["chatwoot:shop"]
        assert isinstance(backend, PlatformBackend)
        return backend

    async def handed_over(self, user: UserClient, after: int = 0) -> int:
        """The user asks for a human; the Chatwoot conversation it made (the first with an
        id over ``after``), once Switchover recorded it."""
        await user.click(SESSION_START)

        def made() -> dict[str, Any] | None:
            found = self.chatwoot.conversation_of(user.conversation_id)
            return found if found is not None and found["id"] > after else None

        found = await self.chatwoot.wait_until(made)
        cid: int = found["id"]
        await until(lambda: self.backend.ticket_by_ref(str(cid)) is not None)
        return cid

    async def joined(self, user: UserClient, cid: int, agent: fake.User = fake.HANA) -> None:
        await self.chatwoot.assign(cid, agent)
        joined = await user.wait_for(_notice("agent_joined"))
        assert joined["content"]["name"] == agent.name


async def settled(r: Rig) -> None:
    """Once Chatwoot sent every webhook so far and Switchover did what they asked."""
    await r.chatwoot.quiet()
    with trio.fail_after(10):
        await r.backend.wait_settled()


def _only(r: Rig) -> str:
    [session_id] = r.backend.open_tickets
    return session_id


async def until(check: Any, timeout: float = 10.0) -> None:
    """Poll a condition of the server's own state (it announces no change)."""
    with trio.fail_after(timeout):
        while not check():  # noqa: ASYNC110
            await trio.sleep(0.01)


async def agent_texts_until(user: UserClient, last: str) -> list[str]:
    """Every agent message the user gets, up to and including ``last``."""
    texts: list[str] = []
    with trio.fail_after(10):
        while not texts or texts[-1] != last:
            frame = await user.next_frame(timeout=10)
            if _entry("agent")(frame) and frame["content_type"] == "text":
                texts.append(frame["content"]["text"])
    return texts


@asynccontextmanager
async def rig(
    chatwoot: fake.Chatwoot | None = None,
    url_suffix: str = "",
    data_dir: Path | None = None,
    **options: Any,
) -> AsyncIterator[Rig]:
    chatwoot = chatwoot if chatwoot is not None else fake.Chatwoot()
    bot = BotServer()
    async with AsyncExitStack() as stack:
        bot_url = await stack.enter_async_context(serving(bot))
        chatwoot_url = await stack.enter_async_context(serving(chatwoot))
        await stack.enter_async_context(chatwoot.delivering())
        nursery = await stack.enter_async_context(trio.open_nursery())
        store = {"store": {"kind": "sqlite", "data_dir": str(data_dir)}} if data_dir else {}
        config = from_mapping(
            {
                **store,
                "listeners": {"ws_port": 0, "http_port": 0, "shutdown_timeout": 2.0},
                "bots": {
                    "shop": {
                        "adapter": "webhook",
                        "options": {"url": bot_url, "secret": BOT_SECRET},
                        "livechat": {
                            "kind": "chatwoot",
                            "options": _options(chatwoot_url, **options),
                        },
                    }
                },
            }
        )
        server: RunningServer = await nursery.start(
            lambda task_status: run_server(config, handle_signals=False, task_status=task_status)
        )
        chatwoot.set_webhook_url(server.http_url + WEBHOOK_PATH + url_suffix)
        try:
            yield Rig(server, chatwoot, bot)
        finally:
            server.stop()


# -- webhooks that misbehave ------------------------------------------------------------------


async def test_a_dropped_webhook_reaches_the_user_through_the_reconcile() -> None:
    async with rig(reconcile_every=0.2) as r, connect_user(r.server.ws_url, bot_id="shop") as user:
        cid = await r.handed_over(user)
        await r.joined(user, cid)
        lost = await r.chatwoot.agent_reply(cid, "sent while the webhook was lost", mishap="drop")
        await r.chatwoot.agent_reply(cid, "and the next one")
        assert await agent_texts_until(user, "and the next one") == [
            "sent while the webhook was lost",
            "and the next one",
        ]
        assert (await r.chatwoot.delivery_of(lost)).answer == "dropped"


async def test_repeated_and_swapped_webhooks_show_each_message_once_in_order() -> None:
    async with rig() as r, connect_user(r.server.ws_url, bot_id="shop") as user:
        cid = await r.handed_over(user)
        await r.joined(user, cid)
        replies = []
        for text, mishap in (("one", "twice"), ("two", "swap"), ("three", ""), ("four", "twice")):
            replies.append(await r.chatwoot.agent_reply(cid, text, mishap=mishap))
        assert await agent_texts_until(user, "four") == ["one", "two", "three", "four"]

        def counts() -> list[int]:
            ids = [d.message_id for d in r.chatwoot.deliveries if d.status == 200]
            return [ids.count(reply["id"]) for reply in replies]

        await r.chatwoot.wait_until(lambda: counts() == [2, 1, 1, 2])
        # The second message's webhook came after the third's.
        order = [d.message_id for d in r.chatwoot.deliveries]
        assert order.index(replies[1]["id"]) > order.index(replies[2]["id"])


async def test_forged_and_late_webhooks_are_refused_and_change_nothing() -> None:
    async with rig() as r, connect_user(r.server.ws_url, bot_id="shop") as user:
        cid = await r.handed_over(user)
        await r.joined(user, cid)
        ticket = r.backend.ticket_by_ref(str(cid))
        assert ticket is not None
        # Nothing else would make Switchover read Chatwoot from here on (no reconcile).
        await settled(r)
        sent = [
            await r.chatwoot.agent_reply(
                cid, "signed with the wrong secret", mishap="wrong_secret"
            ),
            await r.chatwoot.agent_reply(cid, "signed too long ago", mishap="stale"),
            await r.chatwoot.agent_reply(cid, "not signed at all", mishap="unsigned"),
        ]
        first = sent[0]
        refused = [await r.chatwoot.delivery_of(m) for m in sent]
        assert [d.status for d in refused] == [401, 401, 401]
        assert "does not match" in refused[0].answer and "seconds away" in refused[1].answer
        # Refused before anything was read: the ticket has not moved past them.
        assert int(ticket.cursor or 0) < first["id"]
        assert not any(_entry("agent")(f) for f in user.take_all())
        # A genuine webhook makes Switchover read Chatwoot: the messages were real.
        await r.chatwoot.agent_reply(cid, "genuine")
        assert await agent_texts_until(user, "genuine") == [
            "signed with the wrong secret",
            "signed too long ago",
            "not signed at all",
            "genuine",
        ]


async def test_a_forged_request_is_refused_whatever_it_claims() -> None:
    async with rig() as r, connect_user(r.server.ws_url, bot_id="shop") as user:
        cid = await r.handed_over(user)
        body = b'{"event": "conversation_status_changed", "id": %d, "status": "resolved"}' % cid
        timestamp = str(int(time.time()))
        async with httpx.AsyncClient() as http:
            url = r.server.http_url + WEBHOOK_PATH
            forged = await http.post(
                url,
                content=body,
                headers={
                    "X-Chatwoot-Timestamp": timestamp,
                    "X-Chatwoot-Signature": chatwoot_signature("a guess", timestamp, body),
                },
            )
            elsewhere = await http.post(
                r.server.http_url + "/v1/livechat/other/chatwoot", content=b"{}"
            )
            huge = await http.post(url, content=b"{" + b" " * (64 * 1024) + b"}")
        assert forged.status_code == 401 and forged.json()["error"] == "unauthorized"
        assert elsewhere.status_code == 401
        assert huge.status_code == 413
        assert r.chatwoot.conversations[cid]["status"] == "open"
        assert r.backend.ticket_by_ref(str(cid)) is not None


async def test_an_installation_that_signs_nothing_uses_the_url_token() -> None:
    chatwoot = fake.Chatwoot(secret=None)
    async with (
        rig(
            chatwoot, f"?token={fake.URL_TOKEN}", webhook_secret=None, url_token=fake.URL_TOKEN
        ) as r,
        connect_user(r.server.ws_url, bot_id="shop") as user,
    ):
        cid = await r.handed_over(user)
        await r.joined(user, cid)
        await r.chatwoot.agent_reply(cid, "through the token")
        assert await agent_texts_until(user, "through the token") == ["through the token"]
        r.chatwoot.set_webhook_url(r.server.http_url + WEBHOOK_PATH + "?token=guessed-wrong")
        wrong = await r.chatwoot.agent_reply(cid, "with a wrong token")
        refused = await r.chatwoot.delivery_of(wrong)
        assert refused.status == 401 and "token" in refused.answer


# -- what never reaches the user ------------------------------------------------------------


async def test_private_notes_and_switchover_own_messages_never_reach_the_user() -> None:
    async with rig() as r, connect_user(r.server.ws_url, bot_id="shop") as user:
        await user.say_text("before the handoff")
        await r.bot.wait_for_calls(1)
        cid = await r.handed_over(user)
        await r.joined(user, cid)
        await user.say_text("from the user")
        await r.chatwoot.wait_until(lambda: "from the user" in r.chatwoot.incoming(cid))
        await r.chatwoot.private_note(cid, "internal: check the refund policy")
        await r.chatwoot.agent_reply(cid, "visible")
        frames = []
        with trio.fail_after(10):
            while not frames or not _entry("agent", text="visible")(frames[-1]):
                frames.append(await user.next_frame(timeout=10))
        agent_frames = [f for f in frames if _entry("agent")(f)]
        assert [f["content"]["text"] for f in agent_frames] == ["visible"]
        assert not any("internal" in str(f) or "handoff" in str(f) for f in frames)
        # The agents have the transcript and what the user wrote, as Chatwoot shows them.
        [transcript] = [n for n in r.chatwoot.notes(cid) if n.startswith("Conversation before")]
        assert "User: before the handoff" in transcript
        assert r.chatwoot.incoming(cid) == ["from the user"]


async def test_the_users_end_resolves_the_conversation_and_its_echo_changes_nothing() -> None:
    metadata = {"name": "Uma", "plan": "pro", "orders": 3, "vip": True, "tags": ["x"]}
    async with (
        rig() as r,
        connect_user(r.server.ws_url, bot_id="shop", metadata=metadata) as user,
    ):
        cid = await r.handed_over(user)
        [contact] = r.chatwoot.contacts.values()
        assert contact["name"] == "Uma"
        # Flat values only: Chatwoot's custom attributes hold no lists.
        assert contact["custom_attributes"] == {
            "name": "Uma",
            "plan": "pro",
            "orders": 3,
            "vip": True,
        }
        assert r.chatwoot.conversations[cid]["custom_attributes"]["switchover_session"]
        await r.joined(user, cid)
        await user.click(SESSION_END)
        await user.wait_for(_notice("session_ended"))
        await r.chatwoot.wait_until(lambda: r.chatwoot.conversations[cid]["status"] == "resolved")
        assert r.chatwoot.notes(cid)[-1] == "The session ended in Switchover (reason: user_ended)."
        # Switchover's own resolve comes back as a webhook: the ending ticket reads nothing.
        echo = await r.chatwoot.wait_until(
            lambda: [d for d in r.chatwoot.deliveries if d.event == "conversation_status_changed"]
        )
        assert echo[-1].status == 200
        await until(lambda: r.backend.open_tickets == {})
        # Back with the bot, which heard the end once.
        await user.say_text("hi again")
        await r.bot.wait_for_calls(2)
        payloads = [e["content"]["content"].get("payload") for e in r.bot.events]
        assert payloads.count(SESSION_END) == 1
        # A new session is a new conversation of the same contact.
        again = await r.handed_over(user, after=cid)
        assert again != cid and len(r.chatwoot.contacts) == 1
        assert r.chatwoot.conversations[cid]["status"] == "resolved"


async def test_resolving_with_on_resolve_offer_offers_the_sign_off() -> None:
    async with (
        rig(on_resolve="offer") as r,
        connect_user(r.server.ws_url, bot_id="shop") as user,
    ):
        cid = await r.handed_over(user)
        await r.joined(user, cid)
        await r.chatwoot.resolve(cid)
        offer = await user.wait_for(lambda f: _entry("system")(f) and f.get("metadata"))
        assert offer["metadata"]["sign_off"] is True
        # The user keeps the session going: their message reopens the conversation.
        await user.say_text("wait, one more thing")
        await r.chatwoot.wait_until(lambda: r.chatwoot.conversations[cid]["status"] == "open")
        await r.chatwoot.agent_reply(cid, "sure")
        await user.wait_for(_entry("agent", text="sure"))
        await user.click(SESSION_END)
        await user.wait_for(_notice("session_ended"))
        await r.chatwoot.wait_until(lambda: r.chatwoot.conversations[cid]["status"] == "resolved")
        assert "reason: user_ended" in r.chatwoot.notes(cid)[-1]


async def test_assignments_join_transfer_and_come_back() -> None:
    async with rig() as r, connect_user(r.server.ws_url, bot_id="shop") as user:
        cid = await r.handed_over(user)
        await r.joined(user, cid, fake.HANA)
        await r.joined(user, cid, fake.INES)
        await r.chatwoot.agent_reply(cid, "Ines here", fake.INES)
        await user.wait_for(_entry("agent", text="Ines here"))
        await r.joined(user, cid, fake.HANA)
        # Typing is shown for the agent Switchover knows holds the session.
        await until(lambda: r.backend.open_tickets[_only(r)].agent_id == str(fake.HANA.id))
        await r.chatwoot.typing(cid, fake.HANA)
        typing = await user.wait_for(lambda f: f["type"] == "typing")
        assert typing["party"] == "agent" and typing["agent_id"] == str(fake.HANA.id)
        await r.chatwoot.agent_reply(cid, "Hana again")
        said = await user.wait_for(_entry("agent", text="Hana again"))
        assert said["agent_id"] == str(fake.HANA.id)


async def test_an_agent_who_writes_unassigned_joins_and_the_assignee_does_not_bounce() -> None:
    async with rig() as r, connect_user(r.server.ws_url, bot_id="shop") as user:
        cid = await r.handed_over(user)
        await r.joined(user, cid, fake.HANA)
        await r.chatwoot.agent_reply(cid, "Ines chiming in", fake.INES)
        await user.wait_for(_entry("agent", text="Ines chiming in"))
        await r.chatwoot.private_note(cid, "a note that makes Switchover read again")
        await r.chatwoot.agent_reply(cid, "still Ines", fake.INES)
        frames = []
        with trio.fail_after(10):
            while not frames or not _entry("agent", text="still Ines")(frames[-1]):
                frames.append(await user.next_frame(timeout=10))
        # Hana stayed assigned in Chatwoot; she is not announced again.
        assert not any(_notice("agent_joined")(f) for f in frames)


async def test_attachments_reach_the_user_and_a_deleted_conversation_ends_the_session() -> None:
    async with rig(reconcile_every=0.2) as r, connect_user(r.server.ws_url, bot_id="shop") as user:
        cid = await r.handed_over(user)
        await r.joined(user, cid)
        picture = {"id": 1, "file_type": "image", "data_url": "https://files.example/a.png"}
        await r.chatwoot.agent_reply(cid, "here it is", attachments=[picture])
        await user.wait_for(_entry("agent", text="here it is"))
        image = await user.wait_for(lambda f: _entry("agent")(f) and f["content_type"] == "image")
        assert image["content"] == {"url": "https://files.example/a.png"}
        await r.chatwoot.delete(cid)
        ended = await user.wait_for(_notice("session_ended"))
        assert ended["content"]["reason"] == "deleted"


# -- a Chatwoot that fails ---------------------------------------------------------------------


async def test_a_failing_chatwoot_gets_each_message_once_and_in_order() -> None:
    async with rig() as r, connect_user(r.server.ws_url, bot_id="shop") as user:
        cid = await r.handed_over(user)
        r.chatwoot.fail_next(3, 500)
        for n in range(5):
            await user.say_text(f"m{n}")
        expected = [f"m{n}" for n in range(5)]
        await r.chatwoot.wait_until(lambda: r.chatwoot.incoming(cid) == expected)
        failed = [c for c in r.chatwoot.calls if c[2] == 500]
        assert len(failed) == 3


async def test_a_post_chatwoot_stored_but_answered_badly_is_not_posted_twice() -> None:
    async with rig() as r, connect_user(r.server.ws_url, bot_id="shop") as user:
        cid = await r.handed_over(user)
        await user.say_text("ok")
        await r.chatwoot.wait_until(lambda: r.chatwoot.incoming(cid) == ["ok"])
        r.chatwoot.fail_next(1, 502, after_storing=True)
        await user.say_text("ok")
        await user.say_text("and then this")
        await r.chatwoot.wait_until(lambda: len(r.chatwoot.incoming(cid)) >= 3)
        assert r.chatwoot.incoming(cid) == ["ok", "ok", "and then this"]
        assert [c[2] for c in r.chatwoot.calls if c[0] == "POST"].count(502) == 1


async def test_retry_after_is_honoured() -> None:
    async with rig() as r, connect_user(r.server.ws_url, bot_id="shop") as user:
        cid = await r.handed_over(user)
        r.chatwoot.fail_next(1, 429, retry_after="1")
        await user.say_text("throttled")
        await r.chatwoot.wait_until(lambda: r.chatwoot.incoming(cid) == ["throttled"])
        posts = [c for c in r.chatwoot.calls if c[0] == "POST" and c[1].endswith("/messages")]
        (_, _, status, throttled_at), (_, _, ok, retried_at) = posts[-2:]
        assert (status, ok) == (429, 200)
        # The backoff alone would have tried again within 0.2 s; Chatwoot asked for 1.
        assert retried_at - throttled_at >= 0.95


async def test_a_refused_token_ends_the_handoff_clearly() -> None:
    async with (
        rig(api_token="not-the-chatwoot-access-token") as r,
        connect_user(r.server.ws_url, bot_id="shop") as user,
    ):
        await user.click(SESSION_START)
        ended = await user.wait_for(_notice("session_ended"))
        assert ended["content"]["reason"] == "handoff_refused"
        assert r.chatwoot.conversations == {}
        assert r.chatwoot.calls[0][2] == 401


async def test_a_refused_webhook_pokes_nothing_and_an_echo_needs_no_read() -> None:
    """The webhook's checks come before anything is looked up: a refused one leaves the
    ticket alone, whatever its body says."""
    backend = PlatformBackend("chatwoot:shop", Unused(), MemoryTickets())
    backend.request_agent(AgentRequest("c", "c/1", "shop", 0.0))
    backend.open_tickets["c/1"].ref = "5"
    poked: list[str] = []
    backend.poke = lambda ticket: poked.append(ticket.ref)  # type: ignore[method-assign]
    options = ChatwootOptions.read(
        "shop",
        _options("https://chatwoot.example", url_token=fake.URL_TOKEN),
    )

    def webhook(message_type: str = "outgoing", private: bool = False) -> bytes:
        return json.dumps(
            {
                "event": "message_created",
                "message_type": message_type,
                "private": private,
                "conversation": {"id": 5},
                "account": {"id": fake.ACCOUNT_ID},
            }
        ).encode()

    body = webhook()
    now = time.time()

    def signed(secret: str, at: float) -> dict[str, str]:
        stamp = str(int(at))
        return {
            "X-Chatwoot-Timestamp": stamp,
            "X-Chatwoot-Signature": chatwoot_signature(secret, stamp, body),
        }

    good = signed(fake.SECRET, now)
    refusals = [
        (signed("another secret", now), fake.URL_TOKEN),
        (signed(fake.SECRET, now - 301), fake.URL_TOKEN),
        ({}, fake.URL_TOKEN),
        (good, "not-the-url-token"),
        (good, None),
    ]
    for headers, token in refusals:
        status, answer = await take_webhook(backend, options, headers, token, body, now=now)
        assert (status, answer["error"]) == (401, "unauthorized")
    assert poked == []
    assert (await take_webhook(backend, options, good, fake.URL_TOKEN, body, now=now))[0] == 200
    assert poked == ["5"]
    # Switchover's own message and private notes come back too: no read needed.
    for own in (webhook("incoming"), webhook(private=True)):
        headers = {"X-Chatwoot-Timestamp": str(int(now))}
        headers["X-Chatwoot-Signature"] = chatwoot_signature(fake.SECRET, str(int(now)), own)
        status, _ = await take_webhook(backend, options, headers, fake.URL_TOKEN, own, now=now)
        assert status == 200
    assert poked == ["5"]


async def test_opening_a_session_again_finds_what_the_first_try_made() -> None:
    """Killed after Chatwoot made the conversation but before Switchover recorded it, or
    answered badly after the note: the next try makes no second conversation or note."""
    chatwoot = fake.Chatwoot()
    hello = Entry("conv", 1, 0.0, Party.USER, Content.text("hello"), frozenset(Party))
    transcript = Transcript("conv", "conv/1", "shop", "u-1", {"name": "Uma"}, (hello,))
    async with serving(chatwoot) as url, httpx.AsyncClient() as http:
        options = ChatwootOptions.read("shop", _options(url))
        first = await ChatwootConnector(options, http).open(
            Ticket("conv/1", "conv", "shop"), transcript
        )
        again = await ChatwootConnector(options, http).open(
            Ticket("conv/1", "conv", "shop"), transcript
        )
        assert again == first and len(chatwoot.conversations) == 1
        assert chatwoot.notes(int(first)) == [
            "Conversation before the handoff (Switchover conversation conv, session conv/1):\n"
            "User: hello"
        ]
        chatwoot.fail_next(1, 500, after_storing=True)
        connector = ChatwootConnector(options, http)
        second = attrs.evolve(transcript, session_id="conv/2")
        with pytest.raises(PlatformUnavailable):
            await connector.open(Ticket("conv/2", "conv", "shop"), second)
        ref = await connector.open(Ticket("conv/2", "conv", "shop"), second)
        assert len(chatwoot.conversations) == 2 and len(chatwoot.notes(int(ref))) == 1
        assert len(chatwoot.contacts) == 1


async def test_a_post_a_crash_left_unrecorded_is_not_sent_again() -> None:
    """Killed after Chatwoot stored a user's message but before ``sent_seq`` recorded it: the
    next process finds it after the last post it recorded, and posts only what is new, even
    the same words written again."""
    chatwoot = fake.Chatwoot()
    hello = Entry("conv", 1, 0.0, Party.USER, Content.text("hello"), frozenset(Party))
    transcript = Transcript("conv", "conv/1", "shop", "u-1", {"name": "Uma"}, (hello,))
    again = Entry("conv", 2, 0.0, Party.USER, Content.text("ok"), frozenset(Party))
    async with serving(chatwoot) as url, httpx.AsyncClient() as http:
        options = ChatwootOptions.read("shop", _options(url))
        ticket = Ticket("conv/1", "conv", "shop")
        ticket.ref = await ChatwootConnector(options, http).open(ticket, transcript)
        recorded = attrs.evolve(ticket)  # what the tickets file holds when the process dies
        await ChatwootConnector(options, http).post(ticket, again)
        assert chatwoot.incoming(int(ticket.ref)) == ["ok"]
        restarted = ChatwootConnector(options, http)
        await restarted.post(recorded, again)
        assert chatwoot.incoming(int(ticket.ref)) == ["ok"]
        # The same words written once more are a new message.
        await restarted.post(recorded, attrs.evolve(again, seq=3))
        assert chatwoot.incoming(int(ticket.ref)) == ["ok", "ok"]


class Unused:
    """A connector never called (the backend does not run)."""

    async def open(self, ticket: Ticket, transcript: Any) -> str | None:
        raise AssertionError

    async def post(self, ticket: Ticket, entry: Any) -> None:
        raise AssertionError

    async def typing(self, ticket: Ticket) -> None:
        raise AssertionError

    async def close(self, ticket: Ticket, reason: str) -> None:
        raise AssertionError

    async def fetch(self, ticket: Ticket) -> list[Any]:
        raise AssertionError


# -- the config and the setup command ---------------------------------------------------------


def test_the_config_names_every_chatwoot_problem() -> None:
    config = from_mapping(
        {
            "bots": {
                "shop": {
                    "livechat": {
                        "kind": "chatwoot",
                        "options": {
                            "base_url": "chatwoot.example",
                            "account_id": 0,
                            "api_token_env": "NOT_SET_ANYWHERE",
                            "on_resolve": "sometimes",
                        },
                    }
                }
            }
        }
    )
    with pytest.raises(ConfigError) as bad:
        check_platforms(config, environ={})
    problems = "\n".join(bad.value.problems)
    assert "options.base_url: must be an http:// or https:// URL" in problems
    assert "options.account_id: must be a whole number" in problems
    assert "options.inbox_id: is required" in problems
    assert "NOT_SET_ANYWHERE is not set" in problems
    assert "options.webhook_secret: give webhook_secret" in problems
    assert "options.on_resolve: must be one of end, offer" in problems
    fine = ChatwootOptions.read(
        "shop",
        {
            "base_url": "https://chatwoot.example/",
            "account_id": 3,
            "inbox_id": 5,
            "api_token": fake.API_TOKEN,
            "url_token_env": "SHOP_TOKEN",
        },
        environ={"SHOP_TOKEN": fake.URL_TOKEN},
    )
    assert fine.api_url == "https://chatwoot.example/api/v1/accounts/3"
    assert (fine.webhook_secret, fine.url_token, fine.on_resolve) == (None, fake.URL_TOKEN, "end")
    assert fine.reconcile_every == 30.0


def test_every_option_is_documented() -> None:
    from transport.livechat.chatwoot.options import OPTION_KEYS

    root = Path(__file__).resolve().parent.parent
    reference = (root / "docs" / "configuration.md").read_text()
    table = reference[reference.index('Options of `kind = "chatwoot"`') :]
    for key in OPTION_KEYS:
        assert f"`{key}`" in table, key


def _setup_config(tmp_path: Path, chatwoot_url: str) -> Path:
    path = tmp_path / "switchover.toml"
    path.write_text(
        f"""
[bots.shop]
adapter = "demo"
[bots.shop.livechat]
kind = "chatwoot"
[bots.shop.livechat.options]
base_url = "{chatwoot_url}"
account_id = {fake.ACCOUNT_ID}
"""
    )
    return path


def _pasted(out: str) -> tuple[dict[str, Any], dict[str, str]]:
    """The options table and the environment variables the setup printed."""
    table = out[out.index("[bots.shop.livechat]") : out.index("2. Set")]
    options = tomllib.loads(table)["bots"]["shop"]["livechat"]["options"]
    env_part = out[out.index("2. Set") : out.index("The access token")]
    environ = dict(line.strip().split("=", 1) for line in env_part.splitlines() if "=" in line)
    return options, environ


async def test_setup_creates_the_inbox_and_prints_a_config_that_works(
    tmp_path: Path, monkeypatch: Any, capsys: Any
) -> None:
    chatwoot = fake.Chatwoot()
    monkeypatch.setenv("CHATWOOT_ADMIN", fake.ADMIN_TOKEN)
    async with serving(chatwoot) as chatwoot_url:
        config = _setup_config(tmp_path, chatwoot_url)
        args = ["chatwoot", "setup", "--config", str(config), "--bot", "shop"]
        hook = "https://switchover.example"
        status = await trio.to_thread.run_sync(
            cli.main, [*args, "--admin-token-env", "CHATWOOT_ADMIN", "--webhook-url", hook]
        )
        out = capsys.readouterr().out
        assert status == 0, out
        [inbox] = [i for i in chatwoot.inboxes.values() if i["name"] == "Switchover shop"]
        options, environ = _pasted(out)
        assert options["inbox_id"] == inbox["id"]
        token = environ[options["url_token_env"]]
        assert inbox["webhook_url"] == f"{hook}{WEBHOOK_PATH}?token={token}"
        assert environ[options["webhook_secret_env"]] == fake.SECRET
        environ[options["api_token_env"]] = fake.API_TOKEN
        read = ChatwootOptions.read("shop", options, environ)
        assert (read.base_url, read.webhook_secret, read.url_token) == (
            chatwoot_url,
            fake.SECRET,
            token,
        )
        assert "Let us know if we can do anything else.\n\n   LIVECHAT_SESSION_END" in out

        # An inbox made by hand: the URL to give it, and no secret Switchover could know.
        status = await trio.to_thread.run_sync(
            cli.main, [*args, "--inbox-id", "42", "--webhook-url", hook + "/hooks/cw"]
        )
        out = capsys.readouterr().out
        assert status == 0
        options, environ = _pasted(out)
        assert options["inbox_id"] == 42 and "webhook_secret_env" not in options
        assert f"{hook}/hooks/cw?token={environ[options['url_token_env']]}" in out

        # An agent's token cannot create inboxes: said plainly, nothing made.
        monkeypatch.setenv("CHATWOOT_ADMIN", fake.API_TOKEN)
        before = len(chatwoot.inboxes)
        status = await trio.to_thread.run_sync(
            cli.main, [*args, "--admin-token-env", "CHATWOOT_ADMIN", "--webhook-url", hook]
        )
        assert status == 1 and "administrator" in capsys.readouterr().err
        assert len(chatwoot.inboxes) == before


def test_setup_says_what_is_missing(tmp_path: Path, capsys: Any) -> None:
    path = tmp_path / "switchover.toml"
    path.write_text('[bots.shop]\nadapter = "demo"\n')
    base = ["chatwoot", "setup", "--config", str(path), "--inbox-id", "4"]
    assert cli.main([*base, "--bot", "nope", "--webhook-url", "https://x.example"]) == 1
    assert "no bot 'nope'" in capsys.readouterr().err
    assert cli.main([*base, "--bot", "shop", "--webhook-url", "https://x.example"]) == 1
    assert "--base-url" in capsys.readouterr().err
    status = cli.main(
        [
            *base,
            "--bot",
            "shop",
            "--webhook-url",
            "ftp://x",
            "--base-url",
            "https://cw.example",
            "--account-id",
            "2",
        ]
    )
    assert status == 1 and "--webhook-url" in capsys.readouterr().err
    status = cli.main(
        [
            *base,
            "--bot",
            "shop",
            "--webhook-url",
            "https://x.example",
            "--base-url",
            "https://cw.example",
            "--account-id",
            "2",
        ]
    )
    assert status == 0 and 'base_url = "https://cw.example"' in capsys.readouterr().out


# -- restarts ---------------------------------------------------------------------------------


def _toml(bot_url: str, chatwoot_url: str) -> str:
    return f"""
[listeners]
host = "127.0.0.1"
ws_port = 0
http_port = 0

[bots.shop]
adapter = "webhook"
[bots.shop.options]
url = "{bot_url}"
secret = "{BOT_SECRET}"
[bots.shop.livechat]
kind = "chatwoot"
[bots.shop.livechat.options]
base_url = "{chatwoot_url}"
account_id = {fake.ACCOUNT_ID}
inbox_id = {fake.INBOX_ID}
api_token_env = "SHOP_CHATWOOT_API_TOKEN"
webhook_secret = "{fake.SECRET}"
reconcile_every = 3600
max_backoff = 0.2
"""


async def test_an_agent_message_stored_just_before_a_crash_is_not_applied_twice(
    tmp_path: Path,
) -> None:
    """The conversation stored an agent's message, then Switchover died before its ticket
    recorded how far it had read (the ticket file lost its last write): after the restart
    the message is read again from Chatwoot, and recognised in the log."""
    chatwoot = fake.Chatwoot()
    async with (
        rig(chatwoot, data_dir=tmp_path) as r,
        connect_user(r.server.ws_url, bot_id="shop") as user,
    ):
        token = user.resume_token
        cid = await r.handed_over(user)
        await r.joined(user, cid)
        await settled(r)
        [before] = [dict(t.to_json()) for t in r.backend.open_tickets.values()]
        await r.chatwoot.agent_reply(cid, "stored, then the crash")
        await user.wait_for(_entry("agent", text="stored, then the crash"))
        await settled(r)
    # What the ticket file held before that message: its last write lost.
    tickets = SQLiteTickets(tmp_path / FILE_NAME, "shop")
    await tickets.save(Ticket.from_json(before))
    tickets.close()
    async with (
        rig(chatwoot, data_dir=tmp_path) as r,
        connect_user(r.server.ws_url, resume_token=token, last_seq=0) as user,
    ):
        await r.chatwoot.agent_reply(cid, "after the restart")
        assert await agent_texts_until(user, "after the restart") == [
            "stored, then the crash",
            "after the restart",
        ]


async def test_kill_9_and_missed_webhooks_lose_nothing(tmp_path: Path, monkeypatch: Any) -> None:
    """Killed right after acknowledging an agent's webhook, then down while the agents wrote
    (their webhooks failed): after each restart the user has every agent message once, in
    order, and Chatwoot has every user message once."""
    monkeypatch.setenv("SHOP_CHATWOOT_API_TOKEN", fake.API_TOKEN)
    chatwoot = fake.Chatwoot()
    async with (
        serving(BotServer()) as bot_url,
        serving(chatwoot) as chatwoot_url,
        chatwoot.delivering(),
    ):
        text = _toml(bot_url, chatwoot_url)
        async with serving_process(tmp_path, 1, text) as first_run:
            ws_url, http_url = first_run.ws_url, first_run.http_url
            chatwoot.set_webhook_url(http_url + WEBHOOK_PATH)
            async with connect_user(ws_url, bot_id="shop") as user:
                token = user.resume_token
                await user.click(SESSION_START)
                found = await chatwoot.wait_until(
                    lambda: chatwoot.conversation_of(user.conversation_id)
                )
                cid = found["id"]
                await user.say_text("before the crash")
                await chatwoot.wait_until(lambda: chatwoot.incoming(cid) == ["before the crash"])
                reply = await chatwoot.agent_reply(cid, "acknowledged, then killed")
                assert (await chatwoot.delivery_of(reply)).status == 200
        # Down: the agents write and their webhooks find nobody.
        down = await chatwoot.agent_reply(cid, "while Switchover was down")
        await chatwoot.assign(cid, fake.INES)
        also = await chatwoot.agent_reply(cid, "Ines, also while down", fake.INES)
        assert (await chatwoot.delivery_of(down)).status == 0
        assert (await chatwoot.delivery_of(also)).status == 0
        async with serving_process(tmp_path, 2, text) as second_run:
            ws_url, http_url = second_run.ws_url, second_run.http_url
            chatwoot.set_webhook_url(http_url + WEBHOOK_PATH)
            async with connect_user(ws_url, resume_token=token, last_seq=0) as user:
                await user.say_text("after the restart")
                await chatwoot.agent_reply(cid, "welcome back", fake.INES)
                # The whole conversation again (last_seq=0), then what is new: each agent
                # message once, in order.
                assert await agent_texts_until(user, "welcome back") == [
                    "acknowledged, then killed",
                    "while Switchover was down",
                    "Ines, also while down",
                    "welcome back",
                ]
                await chatwoot.wait_until(
                    lambda: chatwoot.incoming(cid)[-1:] == ["after the restart"]
                )
                assert chatwoot.incoming(cid) == ["before the crash", "after the restart"]
