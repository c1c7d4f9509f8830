"""The generic webhook platform when things go wrong: a helpdesk that fails, throttles or is
down, actions sent twice or with the wrong token, and restarts (``kill -9`` included).

Everything runs on 127.0.0.1: the real server (in-process, or as a subprocess for the
kill), a webhook bot, and the fake helpdesk of tests/fakes/helpdesk.py, which checks each
event's signature and schema. Every misbehaviour ends with the same check: the helpdesk and
the user each have everything once, in order.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from actors import SESSION_START
from transport.client import UserClient, connect_user
from transport.config import from_mapping
from transport.livechat.actions import parse_action
from transport.livechat.platform import PlatformBackend
from transport.servers.runtime import RunningServer, run_server

from .fakes import helpdesk as fake
from .fakes.asgi_server import serving
from .fakes.webhook_bot import SECRET as BOT_SECRET
from .fakes.webhook_bot import BotServer
from .support.process import ROOT, serving_process
from .test_conformance import _notice


def _settings(bot_url: str, helpdesk_url: str, **options: Any) -> dict[str, Any]:
    return {
        "bots": {
            "shop": {
                "adapter": "webhook",
                "options": {"url": bot_url, "secret": BOT_SECRET},
                "livechat": {
                    "kind": "webhook",
                    "options": {
                        "url": helpdesk_url + "/events",
                        "secret": fake.SECRET,
                        "api_token": fake.API_TOKEN,
                        "max_backoff": 0.2,
                        "unreachable_after": 0.3,
                        **options,
                    },
                },
            }
        },
    }


class Rig:
    def __init__(
        self, server: RunningServer, desk: fake.Helpdesk, agent: fake.HelpdeskAgent
    ) -> None:
        self.server = server
        self.desk = desk
        self.agent = agent

    @property
    def backend(self) -> PlatformBackend:
        backend = self.server.services.board.backends["webhook:shop"]
        assert isinstance(backend, PlatformBackend)
        return backend

    async def handed_over(self, user: UserClient) -> str:
        await user.click(SESSION_START)
        requested = await self.desk.wait_for(
            lambda e: (
                e["type"] == "session.requested" and e["conversation_id"] == user.conversation_id
            )
        )
        session_id: str = requested["session_id"]
        return session_id


@asynccontextmanager
async def rig(**options: Any) -> AsyncIterator[Rig]:
    desk = fake.Helpdesk()
    async with AsyncExitStack() as stack:
        bot_url = await stack.enter_async_context(serving(BotServer()))
        helpdesk_url = await stack.enter_async_context(serving(desk))
        nursery = await stack.enter_async_context(trio.open_nursery())
        config = from_mapping(
            {
                "listeners": {"ws_port": 0, "http_port": 0, "shutdown_timeout": 2.0},
                **_settings(bot_url, helpdesk_url, **options),
            }
        )
        server: RunningServer = await nursery.start(
            lambda task_status: run_server(config, handle_signals=False, task_status=task_status)
        )
        http = await stack.enter_async_context(httpx.AsyncClient())
        agent = fake.HelpdeskAgent(http, f"{server.http_url}/v1/livechat/shop/actions")
        try:
            yield Rig(server, desk, agent)
        finally:
            server.stop()


async def _until_texts(desk: fake.Helpdesk, session_id: str, count: int) -> list[str]:
    with trio.fail_after(10):
        while len(desk.texts(session_id)) < count:
            await desk.wait_for_calls(desk.calls + 1)
    return desk.texts(session_id)


async def test_a_failing_helpdesk_gets_everything_once_and_in_order_when_it_recovers() -> None:
    async with rig() as r, connect_user(r.server.ws_url, bot_id="shop") as user:
        session_id = await r.handed_over(user)
        r.desk.fail_next(4, 500)
        for n in range(6):
            await user.say_text(f"m{n}")
        assert await _until_texts(r.desk, session_id, 6) == [f"m{n}" for n in range(6)]
        assert r.desk.rejected == [] and r.desk.repeats == 0
        assert r.desk.calls >= 1 + 4 + 6


async def test_retry_after_is_honoured() -> None:
    async with rig() as r, connect_user(r.server.ws_url, bot_id="shop") as user:
        session_id = await r.handed_over(user)
        r.desk.fail_next(1, 429, retry_after="1")
        await user.say_text("throttled")
        assert await _until_texts(r.desk, session_id, 1) == ["throttled"]
        [(throttled_at, status), (retried_at, ok)] = r.desk.answered[-2:]
        assert (status, ok) == (429, 200)
        # The backoff alone would have tried again within 0.2 s; the helpdesk asked for 1.
        assert retried_at - throttled_at >= 0.95


async def test_a_helpdesk_that_is_down_is_told_to_the_user_once_then_catches_up() -> None:
    async with rig() as r, connect_user(r.server.ws_url, bot_id="shop") as user:
        session_id = await r.handed_over(user)
        r.desk.down = True
        await user.say_text("hello?")
        await user.wait_for(_notice("livechat_unreachable"), timeout=10)
        await user.say_text("still there?")
        r.desk.down = False
        assert await _until_texts(r.desk, session_id, 2) == ["hello?", "still there?"]
        frames = user.take_all()
        assert not any(_notice("livechat_unreachable")(f) for f in frames)


async def test_a_refused_handoff_ends_the_session_and_the_bot_has_the_user_again() -> None:
    async with rig() as r, connect_user(r.server.ws_url, bot_id="shop") as user:
        r.desk.fail_next(1, 422)
        await user.click(SESSION_START)
        ended = await user.wait_for(_notice("session_ended"))
        assert ended["content"]["reason"] == "handoff_refused"
        # The user may hear of the end before the backend has forgotten the ticket.
        with trio.fail_after(5):
            await r.backend.wait_settled()
        assert r.backend.open_tickets == {}


async def test_an_action_sent_twice_is_stored_once() -> None:
    async with rig() as r, connect_user(r.server.ws_url, bot_id="shop") as user:
        session_id = await r.handed_over(user)
        await r.agent.act(session_id, "accept")
        body = r.agent.action(
            session_id, "message", content={"content_type": "text", "content": {"text": "hi"}}
        )
        first = await r.agent.send(body)
        again = await r.agent.send(body)
        assert first.status_code == again.status_code == 200
        assert first.json() == again.json() and first.json()["seq"] is not None
        said = await user.wait_for(lambda f: f["type"] == "entry" and f["sender"] == "agent")
        assert said["seq"] == first.json()["seq"]
        await r.agent.say(session_id, "after")
        after = await user.wait_for(lambda f: f["type"] == "entry" and f["sender"] == "agent")
        assert after["content"]["text"] == "after"


async def test_the_api_refuses_what_it_cannot_take_with_a_clear_error() -> None:
    async with rig() as r, connect_user(r.server.ws_url, bot_id="shop") as user:
        session_id = await r.handed_over(user)
        accept = r.agent.action(session_id, "accept")
        wrong = await r.agent.send(accept, token="not-the-token-at-all")
        assert wrong.status_code == 401 and wrong.json()["error"] == "unauthorized"
        elsewhere = await r.agent.http.post(
            r.agent.url.replace("/shop/", "/other/"),
            json=accept,
            headers={"Authorization": f"Bearer {fake.API_TOKEN}"},
        )
        assert elsewhere.status_code == 401
        bad = await r.agent.send({"id": "x", "type": "message", "session_id": session_id})
        assert bad.status_code == 400 and "agent" in bad.json()["message"]
        unknown = await r.agent.send(r.agent.action("nobody/1", "accept"))
        assert unknown.status_code == 404 and unknown.json()["error"] == "unknown_session"
        # None of it touched the session: the agent can still join.
        joined = await r.agent.act(session_id, "accept")
        assert joined["accepted"] is True
        await user.wait_for(_notice("agent_joined"))


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"[]",
        b'{"id": "1", "type": "shout", "session_id": "s"}',
        b'{"id": "1", "type": "accept", "session_id": "s", "agent": {"id": 7}}',
        b'{"id": "1", "type": "message", "session_id": "s", "agent": {"id": "a"}, '
        b'"content": {"content_type": "notice", "content": {}}}',
        b'{"id": "1", "type": "transfer", "session_id": "s", "agent": {"id": "a"}}',
        b'{"id": "1", "type": "accept", "session_id": "s", "agent": {"id": "a"}, "x": 1}',
        b'{"id": "1", "type": "accept", "session_id": "s", "agent": {"id": "a"}, "n": NaN}',
    ],
)
def test_bad_actions_are_refused_with_a_reason(body: bytes) -> None:
    from transport.livechat.actions import BadAction

    with pytest.raises(BadAction) as refused:
        parse_action(body)
    assert str(refused.value)


# -- restarts -------------------------------------------------------------------------------


def _toml(bot_url: str, helpdesk_url: str) -> str:
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
kind = "webhook"
[bots.shop.livechat.options]
url = "{helpdesk_url}/events"
secret = "{fake.SECRET}"
api_token_env = "SHOP_HELPDESK_TOKEN"
max_backoff = 0.2
"""


async def test_kill_9_loses_nothing_either_way(tmp_path: Path, monkeypatch: Any) -> None:
    """Killed after the helpdesk's message was acknowledged and while the helpdesk missed
    the user's messages: after the restart the user has the agent's message, and the
    helpdesk gets the user's messages once, in order."""
    monkeypatch.setenv("SHOP_HELPDESK_TOKEN", fake.API_TOKEN)
    desk = fake.Helpdesk()
    async with (
        serving(BotServer()) as bot_url,
        serving(desk) as helpdesk_url,
        httpx.AsyncClient() as http,
    ):
        text = _toml(bot_url, helpdesk_url)
        async with serving_process(tmp_path, 1, text) as first_run:
            ws_url, http_url = first_run.ws_url, first_run.http_url
            agent = fake.HelpdeskAgent(http, f"{http_url}/v1/livechat/shop/actions")
            async with connect_user(ws_url, bot_id="shop") as user:
                token = user.resume_token
                await user.click(SESSION_START)
                requested = await desk.wait_for(lambda e: e["type"] == "session.requested")
                session_id = requested["session_id"]
                noted = agent.action(
                    session_id,
                    "message",
                    content={"content_type": "text", "content": {"text": "noted, checking"}},
                )
                first = await agent.send(noted)
                assert first.status_code == 200 and first.json()["seq"] is not None
                desk.down = True
                for n in range(3):
                    await user.say_text(f"while down {n}")
        desk.down = False
        async with serving_process(tmp_path, 2, text) as second_run:
            ws_url, http_url = second_run.ws_url, second_run.http_url
            assert await _until_texts(desk, session_id, 3) == [f"while down {n}" for n in range(3)]
            assert desk.repeats == 0 or desk.texts(session_id).count("while down 0") == 1
            seen: list[dict[str, Any]] = []
            async with connect_user(
                ws_url, resume_token=token, last_seq=0, frame_check=seen.append
            ) as user:
                agent.url = f"{http_url}/v1/livechat/shop/actions"
                # The helpdesk never heard the first answer and sends it again: a repeat.
                again = await agent.send(noted)
                assert again.status_code == 200 and again.json() == first.json()
                await agent.say(session_id, "back")
                said = await user.wait_for(
                    lambda f: f["type"] == "entry" and f.get("content", {}).get("text") == "back"
                )
                assert said["sender"] == "agent"
                # The whole conversation, replayed then live: the repeat is not in it.
                texts = [f["content"].get("text") for f in seen if f["type"] == "entry"]
                assert texts.count("noted, checking") == 1
                assert texts.index("noted, checking") < texts.index("while down 0")


def test_the_documented_actions_parse_and_match_their_schema() -> None:
    import json
    from importlib import resources

    import jsonschema

    schema = json.loads(
        (resources.files("transport.livechat") / "schemas" / "action.json").read_text()
    )
    validator = jsonschema.Draft202012Validator(schema)
    doc = (ROOT / "docs" / "platforms.md").read_text()
    lines = doc[doc.index("### Actions") : doc.index("`id` is yours")].splitlines()
    bodies, current = [], ""
    for line in lines:
        if line.startswith('{"id"'):
            if current:
                bodies.append(current)
            current = line
        elif current and line.startswith(" "):
            current += line
        elif current:
            bodies.append(current)
            current = ""
    kinds = set()
    for body in bodies:
        data = json.loads(body)
        assert list(validator.iter_errors(data)) == [], body
        kinds.add(type(parse_action(body.encode()).verb).__name__)
    assert kinds == {"Accept", "Message", "AgentIsTyping", "SignOff", "Transfer", "Release"}


def test_the_config_names_every_livechat_problem() -> None:
    from transport.errors import ConfigError
    from transport.livechat.backends import check_platforms

    with pytest.raises(ConfigError) as bad_kind:
        from_mapping({"bots": {"shop": {"livechat": {"kind": "zendesk"}}}})
    assert any("bots.shop.livechat.kind" in p for p in bad_kind.value.problems)
    config = from_mapping(
        {
            "bots": {
                "shop": {
                    "livechat": {
                        "kind": "webhook",
                        "options": {"url": "ftp://x", "api_token_env": "NOT_SET_ANYWHERE"},
                    }
                }
            }
        }
    )
    with pytest.raises(ConfigError) as bad_options:
        check_platforms(config, environ={})
    problems = "\n".join(bad_options.value.problems)
    assert "bots.shop.livechat.options.url: must be an http:// or https:// URL" in problems
    assert "bots.shop.livechat.options.secret: is required" in problems
    assert "NOT_SET_ANYWHERE is not set" in problems
    fine = from_mapping(
        {
            "bots": {
                "shop": {
                    "livechat": {
                        "kind": "webhook",
                        "options": {
                            "url": "https://help.example/events",
                            "secret_env": "SHOP_SECRET",
                            "api_token": fake.API_TOKEN,
                        },
                    }
                }
            }
        }
    )
    check_platforms(fine, environ={"SHOP_SECRET": "s" * 16})
    assert fine.bots["shop"].backend == "webhook:shop"
