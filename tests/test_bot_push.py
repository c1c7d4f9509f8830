"""Bots pushing messages later: POST /v1/bots/{bot_id}/messages over real HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

import httpx
import pytest
import trio

from actors import (
    SESSION_START,
    BotBinding,
    BotSettings,
    Content,
    ConversationState,
    Desk,
    Entry,
    MemoryStore,
    Party,
    UserSays,
    open_switchboard,
)
from transport.protocol.credentials import hash_token
from transport.protocol.services import Services
from transport.servers.http import push
from transport.servers.http.app import HttpApp

from .conftest import EchoBot, notice, open_watched
from .fakes.asgi_server import serving

TOKEN = "support-bot-token"
OTHER_TOKEN = "sales-bot-token"


@pytest.fixture
async def services() -> AsyncIterator[Services]:
    settings = BotSettings()
    desk = Desk({"support": settings, "sales": settings}, [])
    bots = {"support": BotBinding(EchoBot(), settings), "sales": BotBinding(EchoBot(), settings)}
    async with open_switchboard(bots, {"desk": desk}) as board:
        yield Services(board, desk, "secret", bot_tokens={TOKEN: "support", OTHER_TOKEN: "sales"})


@pytest.fixture
async def http(services: Services) -> AsyncIterator[httpx.AsyncClient]:
    app = HttpApp(services)
    async with serving(app) as url, httpx.AsyncClient(base_url=url) as client:
        yield client


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_a_pushed_message_reaches_the_user(
    services: Services, http: httpx.AsyncClient
) -> None:
    conv, user = await open_watched(services.board, "support")
    question = Content.question("Still there?", [("Talk to a human", SESSION_START)])
    body = {
        "conversation_id": conv,
        "messages": [Content.text("Your order shipped.").to_json(), question.to_json()],
    }
    response = await http.post("/v1/bots/support/messages", json=body, headers=bearer(TOKEN))
    assert response.status_code == 200, response.text
    assert response.json() == {"accepted": True, "seq": 2}
    shown = await user.wait_for(lambda i: isinstance(i, Entry) and i.content == question)
    assert isinstance(shown, Entry) and shown.sender is Party.BOT


async def test_pushes_are_refused_with_clear_errors(
    services: Services, http: httpx.AsyncClient
) -> None:
    board = services.board
    conv = (await board.open_conversation("support")).conversation_id
    sales_conv = (await board.open_conversation("sales")).conversation_id
    hello = [Content.text("hello").to_json()]
    ok: dict[str, Any] = {"conversation_id": conv, "messages": hello}
    cases: list[tuple[dict[str, str], object, int, str]] = [
        ({}, ok, 401, "unauthorized"),
        (bearer("made-up"), ok, 401, "unauthorized"),
        ({"Authorization": f"Basic {TOKEN}"}, ok, 401, "unauthorized"),
        (bearer(OTHER_TOKEN), ok, 403, "forbidden"),
        (bearer(TOKEN), {"conversation_id": "nope", "messages": hello}, 404, ""),
        (bearer(TOKEN), {"conversation_id": sales_conv, "messages": hello}, 404, ""),
        (bearer(TOKEN), {"conversation_id": conv, "messages": []}, 400, "bad_request"),
        (bearer(TOKEN), {"conversation_id": conv, "messages": [{"x": 1}]}, 400, "bad_request"),
        (bearer(TOKEN), {"messages": hello}, 400, "bad_request"),
        (bearer(TOKEN), ["not", "an", "object"], 400, "bad_request"),
    ]
    for headers, body, status, code in cases:
        response = await http.post("/v1/bots/support/messages", json=body, headers=headers)
        assert response.status_code == status, (headers, body, response.text)
        assert response.json()["error"] == (code or "unknown_conversation")
        assert response.json()["message"]
    garbage = await http.post(
        "/v1/bots/support/messages", content=b"{not json", headers=bearer(TOKEN)
    )
    assert (garbage.status_code, garbage.json()["error"]) == (400, "bad_request")


async def test_a_push_is_held_to_what_the_websocket_takes(
    services: Services, http: httpx.AsyncClient
) -> None:
    conv = (await services.board.open_conversation("support")).conversation_id

    def nested(levels: int) -> str:
        return '{"a":' * levels + "1" + "}" * levels

    def body(messages: str, conversation_id: str = conv, extra: str = "") -> str:
        return '{"conversation_id":"' + conversation_id + '","messages":' + messages + extra + "}"

    def content(inner: str, content_type: str = "text", extra: str = "") -> str:
        return '[{"content_type":"' + content_type + '","content":' + inner + extra + "}]"

    text = content('{"text":"hi"}')
    bodies = [
        body(content(nested(10_000))),
        body(content(nested(30))),
        body(content("{}", content_type="")),
        body(text, extra=',"extra":1'),
        body(content("{}", extra=',"x":1')),
        body(content('{"n":NaN}')),
        body(content('{"n":Infinity}')),
        body(content('{"n":1e400}')),
        body(content('{"n":' + str(2**63) + "}")),
        body(content('{"t":"\\ud800"}')),
        body(text, conversation_id="\\ud800"),
        body(content('{"code":"session_ended"}', content_type="notice")),
    ]
    for raw in bodies:
        response = await http.post(
            "/v1/bots/support/messages", content=raw.encode(), headers=bearer(TOKEN)
        )
        assert response.status_code == 400, (raw[:120], response.text)
        assert response.json()["error"] == "bad_request"
        assert response.json()["message"]
    assert await services.board.store.entries_after(conv, 0) == []
    fine = body(text)
    response = await http.post(
        "/v1/bots/support/messages", content=fine.encode(), headers=bearer(TOKEN)
    )
    assert response.status_code == 200, response.text


async def test_a_push_during_a_livechat_session_is_refused(
    services: Services, http: httpx.AsyncClient
) -> None:
    board = services.board
    conv, user = await open_watched(board, "support")
    await board.ask(conv, UserSays(Content.payload(SESSION_START)))
    await user.wait_for(notice("session_started"))
    body = {"conversation_id": conv, "messages": [Content.text("psst").to_json()]}
    response = await http.post("/v1/bots/support/messages", json=body, headers=bearer(TOKEN))
    assert (response.status_code, response.json()["error"]) == (409, "session_open")
    assert all(e.content.text_value != "psst" for e in user.entries())


class GatedStore(MemoryStore):
    """A memory store whose writes wait while ``gate`` is closed (a stalled disk)."""

    def __init__(self) -> None:
        super().__init__()
        self.open = trio.Event()
        self.open.set()

    async def record(self, state: ConversationState, entries: Sequence[Entry]) -> None:
        await self.open.wait()
        await super().record(state, entries)


async def test_a_push_that_times_out_is_pending_and_a_retry_with_its_key_shows_it_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(push, "ANSWER_WITHIN", 0.2)
    store = GatedStore()
    settings = BotSettings()
    bots = {"support": BotBinding(EchoBot(), settings)}
    async with open_switchboard(bots, {"desk": Desk({"support": settings}, [])}, store) as board:
        services = Services(board, board.backends["desk"], "secret", bot_tokens={TOKEN: "support"})  # type: ignore[arg-type]
        app = HttpApp(services)
        async with serving(app) as url, httpx.AsyncClient(base_url=url) as http:
            conv = (await board.open_conversation("support")).conversation_id
            body = {"conversation_id": conv, "messages": [Content.text("Shipped.").to_json()]}
            headers = {**bearer(TOKEN), "Idempotency-Key": "order-42-shipped"}
            store.open = trio.Event()  # the disk stalls
            for _ in range(2):
                response = await http.post("/v1/bots/support/messages", json=body, headers=headers)
                assert response.status_code == 202, response.text
                assert response.json() == {"accepted": True, "pending": True, "seq": None}
            store.open.set()
            response = await http.post("/v1/bots/support/messages", json=body, headers=headers)
            assert (response.status_code, response.json()) == (200, {"accepted": True, "seq": 1})
            shown = [e for e in await store.entries_after(conv, 0) if e.sender is Party.BOT]
            assert [e.content.text_value for e in shown] == ["Shipped."]
            bad = await http.post(
                "/v1/bots/support/messages",
                json=body,
                headers={**bearer(TOKEN), "Idempotency-Key": "x" * 256},
            )
            assert (bad.status_code, bad.json()["error"]) == (400, "bad_request")


async def test_a_bot_may_push_with_a_token_configured_as_its_hash(
    services: Services, http: httpx.AsyncClient
) -> None:
    services.bot_tokens = {hash_token(TOKEN): "support"}
    conv = (await services.board.open_conversation("support")).conversation_id
    body = {"conversation_id": conv, "messages": [Content.text("hi").to_json()]}
    response = await http.post("/v1/bots/support/messages", json=body, headers=bearer(TOKEN))
    assert response.status_code == 200, response.text
    hashed = await http.post(
        "/v1/bots/support/messages", json=body, headers=bearer(hash_token(TOKEN))
    )
    assert hashed.status_code == 401


async def test_repeated_failed_pushes_from_one_address_are_throttled(
    services: Services, http: httpx.AsyncClient
) -> None:
    conv = (await services.board.open_conversation("support")).conversation_id
    body = {"conversation_id": conv, "messages": [Content.text("hi").to_json()]}
    url = "/v1/bots/support/messages"
    for _ in range(services.limits.auth_failures):
        response = await http.post(url, json=body, headers=bearer("guessing-the-token"))
        assert response.status_code == 401
    locked = await http.post(url, json=body, headers=bearer(TOKEN))
    assert locked.status_code == 429
    assert locked.json()["error"] == "too_many_attempts"
    assert int(locked.headers["retry-after"]) >= 1
    assert (await http.get("/healthz")).status_code == 200  # nothing else is refused


async def test_bodies_are_held_to_their_limits_with_the_same_answers(
    services: Services, http: httpx.AsyncClient
) -> None:
    url = "/v1/bots/support/messages"
    over_push = b"x" * (64 * 1024 + 1)
    anonymous = await http.post(url, content=over_push)
    assert anonymous.status_code == 401  # the token is checked before the push's own limit
    pushed = await http.post(url, content=over_push, headers=bearer(TOKEN))
    assert pushed.status_code == 413
    assert pushed.json() == {"error": "too_large", "message": "Bodies are limited to 65536 bytes."}
    over_all = b"x" * (1024 * 1024 + 1)
    for path in (url, "/nowhere", "/healthz"):
        # Every body is read, and held to 1 MiB, before the request is routed.
        response = await http.post(path, content=over_all)
        assert response.status_code == 413, path
        assert response.json() == {
            "error": "too_large",
            "message": "Bodies are limited to 1048576 bytes.",
        }
        assert response.headers["x-content-type-options"] == "nosniff"
