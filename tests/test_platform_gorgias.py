"""The Gorgias platform when things go wrong, and its set-up.

Everything runs on 127.0.0.1: the real server (in-process, or ``switchover serve`` as a
subprocess), a webhook bot, and the fake Gorgias account of tests/fakes/gorgias.py, which
checks credentials, required fields and the rate limit, and calls Switchover's
``/v1/livechat/shop/gorgias`` the way its HTTP integrations do: when told to, it drops,
repeats or reorders those calls, fails API calls, or sends the wrong token. Each
misbehaviour ends with the same check: the user and Gorgias each have everything once, in
order.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from actors import SESSION_END, SESSION_START
from transport import cli
from transport.client import Frame, UserClient, connect_user
from transport.config import from_mapping
from transport.livechat.gorgias.connector import GorgiasConnector
from transport.livechat.platform import PlatformBackend
from transport.servers.runtime import RunningServer, run_server

from .fakes import gorgias as fake
from .fakes.asgi_server import serving
from .fakes.webhook_bot import SECRET as BOT_SECRET
from .fakes.webhook_bot import BotServer
from .support.process import serving_process
from .test_conformance import _notice


def _options(account_url: str, **options: Any) -> dict[str, Any]:
    return {
        "base_url": account_url,
        "email": fake.EMAIL,
        "api_key": fake.API_KEY,
        "webhook_token": fake.WEBHOOK_TOKEN,
        "max_backoff": 0.2,
        "unreachable_after": 0.3,
        # Only the webhooks read Gorgias, unless a test says otherwise.
        "reconcile_every": 3600.0,
        **options,
    }


class Rig:
    def __init__(self, server: RunningServer, account: fake.Gorgias, bot: BotServer) -> None:
        self.server = server
        self.account = account
        self.bot = bot
        self.url = f"{server.http_url}/v1/livechat/shop/gorgias"

    @property
    def backend(self) -> PlatformBackend:
        backend = self.server.services.board.backends["gorgias:shop"]
        assert isinstance(backend, PlatformBackend)
        return backend

    @property
    def connector(self) -> GorgiasConnector:
        connector = self.backend.connector
        assert isinstance(connector, GorgiasConnector)
        return connector

    async def handed_over(self, user: UserClient) -> int:
        """Ask for a human; the new Gorgias ticket's id once it exists and was read once."""
        before = set(self.account.tickets)
        await user.click(SESSION_START)

        def ticket() -> int:
            for found in self.account.tickets.values():
                switchover = found["meta"]["switchover"]
                if switchover["conversation_id"] == user.conversation_id and (
                    found["id"] not in before
                ):
                    return int(found["id"])
            return 0

        ticket_id = await self.account.wait_until(ticket)
        # The read that follows the ticket's creation is over: what agents do next is news.
        await self.account.wait_until(lambda: ticket_id in self.account.message_reads)
        return ticket_id

    async def joined(self, user: UserClient, ticket_id: int, agent: int = 7) -> None:
        await self.account.assign(ticket_id, agent)
        joined = await user.wait_for(_notice("agent_joined"), timeout=10)
        assert joined["content"]["name"] == fake.AGENTS[agent]["name"]

    def session_of(self, ticket_id: int) -> str:
        return str(self.account.tickets[ticket_id]["external_id"])


@asynccontextmanager
async def rig(
    *,
    integrate: bool = True,
    token: str = fake.WEBHOOK_TOKEN,
    account_limit: tuple[int, float] = (40, 20.0),
    **options: Any,
) -> AsyncIterator[Rig]:
    account = fake.Gorgias(limit=account_limit[0], window=account_limit[1])
    bot = BotServer()
    async with AsyncExitStack() as stack:
        bot_url = await stack.enter_async_context(serving(bot))
        account_url = await stack.enter_async_context(serving(account))
        nursery = await stack.enter_async_context(trio.open_nursery())
        config = from_mapping(
            {
                "listeners": {"ws_port": 0, "http_port": 0, "shutdown_timeout": 2.0},
                # A user may write faster than the 20 frames a second a client gets.
                "limits": {"rate": 1000.0, "burst": 1000},
                "bots": {
                    "shop": {
                        "adapter": "webhook",
                        "options": {"url": bot_url, "secret": BOT_SECRET},
                        "livechat": {
                            "kind": "gorgias",
                            "options": _options(account_url, **options),
                        },
                    }
                },
            }
        )
        server: RunningServer = await nursery.start(
            lambda task_status: run_server(config, handle_signals=False, task_status=task_status)
        )
        r = Rig(server, account, bot)
        if integrate:
            account.integrate(r.url, token=token)
        try:
            yield r
        finally:
            server.stop()


def _is_agent(frame: Frame) -> bool:
    return frame["type"] == "entry" and frame["sender"] == "agent"


async def _agent_texts_until(
    user: UserClient, last: str, seen: list[Frame] | None = None
) -> list[str]:
    """What agents said to the user, in order, up to and with ``last``."""
    texts: list[str] = []
    with trio.fail_after(15):
        while not texts or texts[-1] != last:
            frame = await user.next_frame(timeout=15)
            if seen is not None:
                seen.append(frame)
            if _is_agent(frame):
                texts.append(frame["content"]["text"])
    return texts


async def _customer_texts(account: fake.Gorgias, ticket_id: int, count: int) -> list[str]:
    await account.wait_until(lambda: len(account.customer_texts(ticket_id)) >= count, 30)
    return account.customer_texts(ticket_id)


# -- the webhooks misbehave -----------------------------------------------------------------


async def test_a_dropped_webhook_is_made_up_for_by_the_timed_read() -> None:
    async with rig(reconcile_every=0.2) as r, connect_user(r.server.ws_url, bot_id="shop") as user:
        ticket_id = await r.handed_over(user)
        await r.joined(user, ticket_id)
        r.account.drop_webhooks = 1
        await r.account.reply(ticket_id, "the webhook for this one is lost")
        assert r.account.deliveries[-1].status is None
        await r.account.reply(ticket_id, "and this one arrives")
        assert await _agent_texts_until(user, "and this one arrives") == [
            "the webhook for this one is lost",
            "and this one arrives",
        ]


async def test_repeated_webhooks_apply_each_action_once() -> None:
    async with rig() as r, connect_user(r.server.ws_url, bot_id="shop") as user:
        ticket_id = await r.handed_over(user)
        r.account.repeat_webhooks = True
        await r.joined(user, ticket_id)
        for text in ("one", "two", "three"):
            await r.account.reply(ticket_id, text)
        r.account.repeat_webhooks = False
        await r.account.reply(ticket_id, "last")
        assert await _agent_texts_until(user, "last") == ["one", "two", "three", "last"]
        assert set(r.account.statuses()) == {200}
        assert len(r.account.statuses("ticket-message-created")) == 3 * 2 + 1


async def test_reordered_webhooks_apply_in_order() -> None:
    async with rig() as r, connect_user(r.server.ws_url, bot_id="shop") as user:
        ticket_id = await r.handed_over(user)
        r.account.holding = True
        await r.account.assign(ticket_id)
        for text in ("first", "second", "third"):
            await r.account.reply(ticket_id, text)
        assert len(r.account.held) == 4
        await r.account.release_held(reverse=True)
        seen: list[Frame] = []
        assert await _agent_texts_until(user, "third", seen) == ["first", "second", "third"]
        assert [f["content"]["code"] for f in seen if _notice("agent_joined")(f)] == [
            "agent_joined"
        ]


async def test_a_wrong_token_is_refused_and_applies_nothing() -> None:
    async with (
        rig(token="not-the-webhook-token") as r,
        connect_user(r.server.ws_url, bot_id="shop") as user,
    ):
        ticket_id = await r.handed_over(user)
        session_id = r.session_of(ticket_id)
        await r.account.assign(ticket_id)
        assert r.account.deliveries[-1].status == 401
        assert r.account.deliveries[-1].answer["error"] == "unauthorized"
        # Nothing was read: the session still waits.
        assert r.backend.open_tickets[session_id].agent_id is None
        assert not any(_notice("agent_joined")(f) for f in user.take_all())
        async with httpx.AsyncClient() as http:
            body = {"ticket_id": str(ticket_id), "event": "ticket-updated"}
            bare = await http.post(r.url, json=body)
            assert bare.status_code == 401
            elsewhere = await http.post(
                r.url.replace("/shop/", "/other/"),
                json=body,
                headers={"X-Switchover-Token": fake.WEBHOOK_TOKEN},
            )
            assert elsewhere.status_code == 401
            unknown = await http.post(
                r.url, json={"ticket_id": "999999"}, params={"token": fake.WEBHOOK_TOKEN}
            )
            assert unknown.status_code == 200 and unknown.json()["known"] is False
            not_json = await http.post(
                r.url, content=b"{", headers={"X-Switchover-Token": fake.WEBHOOK_TOKEN}
            )
            assert not_json.status_code == 400
            # With the token, the same news is read and applied.
            right = await http.post(
                r.url, json=body, headers={"X-Switchover-Token": fake.WEBHOOK_TOKEN}
            )
            assert right.status_code == 200 and right.json()["read"] is True
        await user.wait_for(_notice("agent_joined"), timeout=10)


# -- what agents do -------------------------------------------------------------------------


async def test_internal_notes_never_reach_the_user() -> None:
    async with rig() as r, connect_user(r.server.ws_url, bot_id="shop") as user:
        ticket_id = await r.handed_over(user)
        await r.joined(user, ticket_id)
        await r.account.note(ticket_id, "between us: check the refund first")
        await r.account.reply(ticket_id, "looking into it")
        seen: list[Frame] = []
        assert await _agent_texts_until(user, "looking into it", seen) == ["looking into it"]
        assert "between us" not in repr(seen)


async def test_assignments_join_transfer_and_return_the_session_to_the_queue() -> None:
    async with rig() as r, connect_user(r.server.ws_url, bot_id="shop") as user:
        ticket_id = await r.handed_over(user)
        await r.joined(user, ticket_id, 7)
        await r.joined(user, ticket_id, 9)
        await r.account.assign(ticket_id, None)
        left = await user.wait_for(_notice("agent_left"), timeout=10)
        assert left["content"]["agent_id"] == "9"
        # An agent who replies unassigned joins all the same.
        await r.account.reply(ticket_id, "Hana here", agent=7)
        joined = await user.wait_for(_notice("agent_joined"), timeout=10)
        assert joined["content"]["name"] == "Hana"
        assert await _agent_texts_until(user, "Hana here") == ["Hana here"]


async def test_our_own_closing_comes_back_and_changes_nothing() -> None:
    async with rig() as r, connect_user(r.server.ws_url, bot_id="shop") as user:
        ticket_id = await r.handed_over(user)
        await r.joined(user, ticket_id)
        await user.click(SESSION_END)
        ended = await user.wait_for(_notice("session_ended"))
        assert ended["content"]["reason"] == "user_ended"
        ticket = r.account.tickets[ticket_id]

        def echoed() -> bool:
            updates = [
                d
                for d in r.account.deliveries
                if d.ticket_id == ticket_id and d.event == "ticket-updated" and d.status
            ]
            return ticket["status"] == "closed" and len(updates) == 2  # assigned, closed

        await r.account.wait_until(echoed)
        assert r.account.notes(ticket_id) == ["Livechat session ended. Reason: user_ended"]
        assert set(r.account.statuses()) == {200}
        # The note and the closing came back: answered, and nothing read for them.
        echoes = [d for d in r.account.deliveries if d.ticket_id == ticket_id][-2:]
        assert [d.event for d in echoes] == ["ticket-message-created", "ticket-updated"]
        assert [d.answer["read"] for d in echoes] == [False, False]
        # The next session is a new ticket, untouched by the old one's echo.
        second = await r.handed_over(user)
        assert second != ticket_id
        await r.joined(user, second)
        await r.account.reply(second, "welcome back")
        assert await _agent_texts_until(user, "welcome back") == ["welcome back"]
        ends = [e for e in r.bot.events if e["content"]["content"].get("payload") == SESSION_END]
        assert len(ends) == 1


async def test_a_closed_ticket_ends_the_session_and_the_bot_is_told() -> None:
    async with rig() as r, connect_user(r.server.ws_url, bot_id="shop") as user:
        ticket_id = await r.handed_over(user)
        await r.joined(user, ticket_id)
        await r.account.close(ticket_id)
        ended = await user.wait_for(_notice("session_ended"), timeout=10)
        assert ended["content"]["reason"] == "ticket_closed"
        await r.account.wait_until(lambda: r.account.notes(ticket_id))
        assert r.account.notes(ticket_id) == ["Livechat session ended. Reason: ticket_closed"]
        # Already closed: Switchover adds its note and does not close it again.
        puts = [c for c in r.account.calls if c[1] == "PUT"]
        assert puts == []


# -- the API misbehaves ---------------------------------------------------------------------


async def test_failing_calls_lose_and_repeat_nothing() -> None:
    async with rig() as r, connect_user(r.server.ws_url, bot_id="shop") as user:
        # The ticket is made, but the answer is lost: the retry finds it.
        r.account.fail_next(1, 504, after=True, call="POST /api/tickets")
        await user.click(SESSION_START)
        await user.wait_for(_notice("session_started"))
        await r.account.wait_until(lambda: len(r.account.tickets) == 1)
        [ticket_id] = r.account.tickets
        await r.account.wait_until(
            lambda: (
                r.backend.open_tickets
                and all(t.ref == str(ticket_id) for t in r.backend.open_tickets.values())
            )
        )
        posting = f"POST /api/tickets/{ticket_id}/messages"
        r.account.fail_next(2, 500, call=posting)
        await user.say_text("m0")
        await user.say_text("m1")
        assert await _customer_texts(r.account, ticket_id, 2) == ["m0", "m1"]
        # Posted, but answered 502: read before posting again, so it is there once.
        r.account.fail_next(1, 502, after=True, call=posting)
        for n in range(2, 5):
            await user.say_text(f"m{n}")
        assert await _customer_texts(r.account, ticket_id, 5) == [f"m{n}" for n in range(5)]
        assert len(r.account.tickets) == 1
        statuses = [c[3] for c in r.account.calls]
        assert statuses.count(500) == 2 and statuses.count(502) == statuses.count(504) == 1


async def test_retry_after_is_honoured() -> None:
    async with rig() as r, connect_user(r.server.ws_url, bot_id="shop") as user:
        ticket_id = await r.handed_over(user)
        posting = f"POST /api/tickets/{ticket_id}/messages"
        r.account.fail_next(1, 429, retry_after="1", call=posting)
        await user.say_text("throttled")
        assert await _customer_texts(r.account, ticket_id, 1) == ["throttled"]
        throttled = next(c for c in r.account.calls if c[3] == 429)
        retried = next(
            c for c in r.account.calls if c[0] > throttled[0] and c[1:3] == tuple(posting.split())
        )
        assert retried[3] == 201
        # The backoff alone would have tried again within 0.2 s; Gorgias asked for 1.
        assert retried[0] - throttled[0] >= 0.95


async def test_a_burst_of_messages_stays_inside_the_rate_limit() -> None:
    """60 messages at once, with Gorgias's 40 requests a window (a 5 s window here, to keep
    the test short): every one arrives, in order, and Gorgias never answers 429."""
    async with rig(account_limit=(40, 5.0), requests_per_window=40, window=5.0) as r:
        async with connect_user(r.server.ws_url, bot_id="shop") as user:
            ticket_id = await r.handed_over(user)
            # Gorgias is slow for a moment: the messages pile up, then go all at once.
            r.account.gate = trio.Event()
            for n in range(60):
                await user.say_text(f"burst {n}")
            r.account.gate.set()
            texts = await _customer_texts(r.account, ticket_id, 60)
        assert texts == [f"burst {n}" for n in range(60)]
        assert r.account.throttled == 0
        assert not [c for c in r.account.calls if c[3] == 429]
        # The limit was reached: the bucket made calls wait, which Gorgias would have
        # refused otherwise (at most 38 calls at once, then 8 a second).
        assert r.connector.bucket.waited > 0
        assert len(r.account.calls) > 40


# -- the fake checks what Gorgias checks ----------------------------------------------------


async def test_the_fake_refuses_what_gorgias_refuses() -> None:
    account = fake.Gorgias(limit=5, window=20.0)
    auth = (fake.EMAIL, fake.API_KEY)
    async with serving(account) as url, httpx.AsyncClient(base_url=url) as http:
        wrong = await http.get("/api/tickets", auth=(fake.EMAIL, "wrong"))
        assert wrong.status_code == 401
        empty = {"channel": "api", "via": "api", "customer": {"email": "u@x.example"}}
        assert (await http.post("/api/tickets", json=empty, auth=auth)).status_code == 400
        message = {
            "channel": "api",
            "via": "api",
            "body_text": "hi",
            "sender": {"email": "u@x.example"},
        }
        no_from = {**empty, "messages": [message]}
        assert (await http.post("/api/tickets", json=no_from, auth=auth)).status_code == 400
        ok = {**empty, "messages": [{**message, "from_agent": False}]}
        made = await http.post("/api/tickets", json=ok, auth=auth)
        assert made.status_code == 201 and made.json()["messages"][0]["from_agent"] is False
        answers = [await http.get("/api/tickets", auth=auth) for _ in range(3)]
        assert [a.status_code for a in answers] == [200, 200, 429]
        assert int(answers[-1].headers["retry-after"]) >= 1
        assert answers[0].headers["x-gorgias-account-api-call-limit"] == "4/5"
        assert account.throttled == 1


# -- set-up and configuration ---------------------------------------------------------------


def _toml(bot_url: str, account_url: str, **extra: str) -> str:
    lines = "\n".join(f'{k} = "{v}"' for k, v in extra.items())
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
kind = "gorgias"
[bots.shop.livechat.options]
base_url = "{account_url}"
email = "{fake.EMAIL}"
api_key_env = "SHOP_GORGIAS_KEY"
webhook_token_env = "SHOP_GORGIAS_TOKEN"
max_backoff = 0.2
{lines}
"""


async def test_setup_creates_the_integration_once(
    tmp_path: Path, monkeypatch: Any, capsys: Any
) -> None:
    monkeypatch.setenv("SHOP_GORGIAS_KEY", fake.API_KEY)
    monkeypatch.setenv("SHOP_GORGIAS_TOKEN", fake.WEBHOOK_TOKEN)
    account = fake.Gorgias()
    async with serving(account) as account_url:
        config = tmp_path / "switchover.toml"
        config.write_text(_toml("http://127.0.0.1:9", account_url))
        command = ["gorgias", "setup", "--config", str(config), "--bot", "shop"]
        run: Callable[..., int] = cli.main
        status = await trio.to_thread.run_sync(
            run, [*command, "--webhook-url", "https://chat.shop.example"]
        )
        assert status == 0
        printed = capsys.readouterr().out
        assert "Created the Gorgias HTTP integration" in printed
        assert "LIVECHAT_SESSION_END" in printed
        assert fake.WEBHOOK_TOKEN not in printed
        [made] = account.integrations.values()
        http = made["http"]
        assert http["url"] == "https://chat.shop.example/v1/livechat/shop/gorgias"
        assert http["method"] == "POST"
        assert http["headers"] == {"X-Switchover-Token": fake.WEBHOOK_TOKEN}
        assert http["triggers"] == {"ticket-message-created": True, "ticket-updated": True}
        assert http["form"]["ticket_id"] == "{{ticket.id}}"
        # Again, with the full route: the same integration, updated.
        again = await trio.to_thread.run_sync(
            run, [*command, "--webhook-url", "https://chat.shop.example/v1/livechat/shop/gorgias"]
        )
        assert again == 0 and "Updated" in capsys.readouterr().out
        assert [i["id"] for i in account.integrations.values()] == [made["id"]]
        other = await trio.to_thread.run_sync(
            run,
            [
                "gorgias",
                "setup",
                "--config",
                str(config),
                "--bot",
                "nobody",
                "--webhook-url",
                "https://chat.shop.example",
            ],
        )
        assert other == 1 and "must be gorgias" in capsys.readouterr().err


def test_the_config_names_every_gorgias_problem() -> None:
    from transport.errors import ConfigError
    from transport.livechat.backends import check_platforms

    config = from_mapping(
        {
            "bots": {
                "shop": {
                    "livechat": {
                        "kind": "gorgias",
                        "options": {
                            "domain": "not a domain",
                            "email": "nobody",
                            "webhook_token": "short",
                            "api_key_env": "NOT_SET_ANYWHERE",
                            "requests_per_window": 0,
                        },
                    }
                }
            }
        }
    )
    with pytest.raises(ConfigError) as bad:
        check_platforms(config, environ={})
    problems = "\n".join(bad.value.problems)
    key = "bots.shop.livechat.options"
    assert f"{key}.domain: must be the <domain> of https://<domain>.gorgias.com" in problems
    assert f"{key}.email: must be the email address" in problems
    assert f"{key}.webhook_token: must be at least 16 characters" in problems
    assert "NOT_SET_ANYWHERE is not set" in problems
    assert f"{key}.requests_per_window: must be a whole number" in problems
    fine = from_mapping(
        {
            "bots": {
                "shop": {
                    "livechat": {
                        "kind": "gorgias",
                        "options": {
                            "domain": "shop",
                            "email": fake.EMAIL,
                            "api_key_env": "KEY",
                            "webhook_token": fake.WEBHOOK_TOKEN,
                        },
                    }
                }
            }
        }
    )
    check_platforms(fine, environ={"KEY": fake.API_KEY})
    assert fine.bots["shop"].backend == "gorgias:shop"


# -- end to end -----------------------------------------------------------------------------


async def test_switchover_serve_end_to_end_and_across_kill_9(
    tmp_path: Path, monkeypatch: Any
) -> None:
    """``switchover serve`` with a config naming the account: a whole session, with a
    ``kill -9`` in the middle after which nothing is lost or posted twice."""
    monkeypatch.setenv("SHOP_GORGIAS_KEY", fake.API_KEY)
    monkeypatch.setenv("SHOP_GORGIAS_TOKEN", fake.WEBHOOK_TOKEN)
    account = fake.Gorgias()
    bot = BotServer()
    async with serving(bot) as bot_url, serving(account) as account_url:
        text = _toml(bot_url, account_url)
        async with serving_process(tmp_path, 1, text) as first_run:
            ws_url, http_url = first_run.ws_url, first_run.http_url
            account.integrate(f"{http_url}/v1/livechat/shop/gorgias")
            async with connect_user(ws_url, bot_id="shop", metadata={"name": "Uma"}) as user:
                token = user.resume_token
                await user.say_text("where is my parcel?")
                await bot.wait_for_calls(1)
                await user.click(SESSION_START)
                await account.wait_until(lambda: account.tickets)
                [ticket] = account.tickets.values()
                ticket_id = int(ticket["id"])
                assert ticket["customer"]["name"] == "Uma"
                request = account.messages_of(ticket_id)[0]["body_text"]
                assert "User: where is my parcel?" in request
                await account.assign(ticket_id)
                await user.wait_for(_notice("agent_joined"), timeout=10)
                await account.reply(ticket_id, "Hi Uma, checking")
                said = await user.wait_for(_is_agent, timeout=10)
                assert said["content"]["text"] == "Hi Uma, checking"
                await user.say_text("order 1234")
                assert await _customer_texts(account, ticket_id, 1) == ["order 1234"]
        # Killed; the agent answers meanwhile, and the webhook finds nobody.
        await account.reply(ticket_id, "found it")
        async with serving_process(tmp_path, 2, text) as second_run:
            ws_url, http_url = second_run.ws_url, second_run.http_url
            account.integrations.clear()
            account.integrate(f"{http_url}/v1/livechat/shop/gorgias")
            async with connect_user(ws_url, resume_token=token) as user:
                # Read at start-up: the reply sent while Switchover was down arrives.
                found = await user.wait_for(
                    lambda f: _is_agent(f) and f["content"]["text"] == "found it", timeout=15
                )
                assert found["sender"] == "agent"
                await user.say_text("thanks")
                assert await _customer_texts(account, ticket_id, 2) == ["order 1234", "thanks"]
                await account.close(ticket_id)
                ended = await user.wait_for(_notice("session_ended"), timeout=10)
                assert ended["content"]["reason"] == "ticket_closed"
                await account.wait_until(lambda: account.notes(ticket_id))
        assert account.notes(ticket_id) == ["Livechat session ended. Reason: ticket_closed"]
        assert account.throttled == 0


# -- the pieces, alone ----------------------------------------------------------------------


def test_the_customer_is_the_users_email_or_a_stable_placeholder() -> None:
    from transport.livechat.gorgias.connector import customer_email

    assert customer_email("u-42", {"email": " uma@shop.example "}) == "uma@shop.example"
    assert customer_email("u-42", {"email": "not an address"}) == ("u-42@users.switchover.invalid")
    odd = customer_email("Uma Smith/7", {})
    assert odd == customer_email("Uma Smith/7", {"name": "Uma"})
    assert odd.startswith("u-") and odd.endswith("@users.switchover.invalid")
    assert len(odd.partition("@")[0]) == 2 + 32


def test_the_transcript_and_messages_read_as_lines() -> None:
    from actors import Content, Entry, Party
    from actors.model.deliveries import Transcript
    from transport.livechat.gorgias.connector import readable, transcript_text

    def entry(seq: int, sender: Party, content: Content) -> Entry:
        return Entry("c", seq, 0.0, sender, content, frozenset({Party.USER}))

    transcript = Transcript(
        "c",
        "c/1",
        "shop",
        "u-42",
        {"name": "Uma"},
        (
            entry(1, Party.USER, Content.text("where is my parcel?")),
            entry(2, Party.BOT, Content.text("Let me find someone.")),
            entry(3, Party.SYSTEM, Content.notice("session_started")),
        ),
        truncated=True,
    )
    assert transcript_text(transcript) == (
        "Livechat request from Uma (user u-42).\n\n"
        "Conversation so far (earlier messages left out):\n"
        "User: where is my parcel?\n"
        "Bot: Let me find someone."
    )
    assert readable(Content.payload("MENU")) == "[button] MENU"
    image = Content("image", {"url": "https://cdn.example/a.png"})
    assert readable(image) == "[image] https://cdn.example/a.png"


async def test_the_token_bucket_spaces_calls_out_on_trios_clock(autojump_clock: Any) -> None:
    from transport.livechat.gorgias.ratelimit import TokenBucket

    bucket = TokenBucket(40, 20.0)
    start = trio.current_time()
    for _ in range(38):
        await bucket.take()
    assert trio.current_time() == start  # the burst, less the reserve of two
    await bucket.take()
    assert trio.current_time() - start == pytest.approx(0.5)  # then 2 a second
    await bucket.take()
    assert trio.current_time() - start == pytest.approx(1.0)
    # Gorgias says the account is spent (other clients use it too): wait for that.
    bucket.observe(39, 40)
    before = trio.current_time()
    await bucket.take()
    assert trio.current_time() - before == pytest.approx(1.0)  # -1 token, then 2 a second
    # Saying less is used never gives more than the bucket has.
    bucket.observe(0, 40)
    before = trio.current_time()
    await bucket.take()
    assert trio.current_time() - before == pytest.approx(0.5)


def test_what_a_webhook_needs_no_read_for() -> None:
    from transport.livechat.gorgias.webhook import nothing_to_read
    from transport.livechat.tickets import Ticket

    ticket = Ticket("c/1", "c", "shop", ref="12", cursor="40/7")
    customer = {"event": "ticket-message-created", "from_agent": "False", "channel": "api"}
    assert nothing_to_read(ticket, customer)
    assert not nothing_to_read(ticket, {**customer, "from_agent": "True"})
    assert not nothing_to_read(ticket, {**customer, "channel": "internal-note"})
    assert not nothing_to_read(ticket, {"event": "ticket-message-created"})
    same = {"event": "ticket-updated", "status": "open", "assignee_user_id": "7"}
    assert nothing_to_read(ticket, same)
    assert not nothing_to_read(ticket, {**same, "assignee_user_id": "9"})
    assert not nothing_to_read(ticket, {**same, "assignee_user_id": "None"})
    assert not nothing_to_read(ticket, {**same, "status": "closed"})
    assert not nothing_to_read(ticket, {"event": "ticket-updated"})
    unassigned = Ticket("c/1", "c", "shop", ref="12", cursor="40/")
    assert nothing_to_read(unassigned, {**same, "assignee_user_id": "None"})
