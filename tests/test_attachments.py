"""Attachments between a user and an agent: the real server on 127.0.0.1, real WebSocket
clients for the conversation, a real HTTP client for the uploads and downloads."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import httpx
import pytest
import trio

from actors import SESSION_START, ConversationState
from transport.client import AgentClient, Frame, UserClient, connect_agent, connect_user
from transport.config import from_mapping
from transport.errors import ConfigError
from transport.protocol.attachments import AttachmentLimits, check_upload, clean_name, sniff
from transport.protocol.frames import server_frame_errors
from transport.servers.runtime import RunningServer, run_server
from transport.store.attachments import (
    FOLDER,
    AttachmentStore,
    NoRoom,
    folder_name,
    sweep_attachments,
)
from transport.store.sqlite import database_path, open_sqlite_store

ALICE = "alice-token-for-attachment-tests"
CAROL = "carol-token-for-attachment-tests"
BOB = "bob-token-for-attachment-tests"
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR" + bytes(range(200))
CONFIG: dict[str, Any] = {
    "bots": {"demo": {"adapter": "demo"}, "other": {"adapter": "demo"}},
    "agents": {
        "alice": {"name": "Alice", "token": ALICE, "bots": ["demo"], "capacity": 5},
        "carol": {"name": "Carol", "token": CAROL, "bots": ["demo"]},
        "bob": {"name": "Bob", "token": BOB, "bots": ["other"]},
    },
    "default_bot": "demo",
}


def check_schema(frame: Frame) -> None:
    errors = list(server_frame_errors(frame))
    assert not errors, (frame, errors)


@asynccontextmanager
async def serving(
    config: Mapping[str, Any] | None = None, **options: Any
) -> AsyncIterator[RunningServer]:
    data = {
        **CONFIG,
        "listeners": {"ws_port": 0, "http_port": 0, "shutdown_timeout": 2.0},
        **(config or {}),
    }
    async with trio.open_nursery() as nursery:
        running: RunningServer = await nursery.start(
            lambda task_status: run_server(
                from_mapping(data), handle_signals=False, task_status=task_status, **options
            )
        )
        yield running
        running.stop()


@attrs.frozen
class Chat:
    """A user in a livechat session held by Alice, and an HTTP client."""

    server: RunningServer
    user: UserClient
    alice: AgentClient
    http: httpx.AsyncClient

    @property
    def conversation_id(self) -> str:
        return self.user.conversation_id

    def path(self, attachment_id: str | None = None) -> str:
        base = f"/v1/conversations/{self.conversation_id}/attachments"
        return base if attachment_id is None else f"{base}/{attachment_id}"

    async def upload(
        self, token: str, data: bytes | AsyncIterator[bytes], content_type: str, name: str = "f"
    ) -> httpx.Response:
        return await self.http.post(
            self.path(),
            params={"name": name},
            content=data,
            headers={"authorization": f"Bearer {token}", "content-type": content_type},
        )

    async def download(self, token: str | None, attachment_id: str) -> httpx.Response:
        headers = {} if token is None else {"authorization": f"Bearer {token}"}
        return await self.http.get(self.path(attachment_id), headers=headers)


def _entry(content_type: str) -> Any:
    return lambda f: f["type"] == "entry" and f["content_type"] == content_type


@asynccontextmanager
async def chatting(config: Mapping[str, Any] | None = None, **options: Any) -> AsyncIterator[Chat]:
    async with AsyncExitStack() as stack:
        server = await stack.enter_async_context(serving(config, **options))
        user = await stack.enter_async_context(
            connect_user(server.ws_url, frame_check=check_schema)
        )
        await user.click(SESSION_START)
        alice = await stack.enter_async_context(
            connect_agent(server.ws_url, ALICE, frame_check=check_schema)
        )
        await alice.set_presence("online")
        await alice.wait_for(lambda f: f["type"] == "transcript")
        await user.wait_for(lambda f: f.get("content", {}).get("code") == "agent_joined")
        http = await stack.enter_async_context(
            httpx.AsyncClient(base_url=server.http_url, timeout=10)
        )
        yield Chat(server, user, alice, http)


# -- the whole path ---------------------------------------------------------------------------


async def test_a_user_sends_an_image_the_agent_sees_and_downloads() -> None:
    async with chatting() as chat:
        answer = await chat.upload(chat.user.resume_token, PNG, "image/png", "cat.png")
        assert answer.status_code == 201, answer.text
        sent = answer.json()
        assert sent["content_type"] == "image"
        content = sent["content"]
        assert content["name"] == "cat.png"
        assert content["mime_type"] == "image/png"
        assert content["size"] == len(PNG)
        assert content["url"] == chat.path(content["attachment_id"])
        # A message like any other: numbered, and delivered to the agent and to the user.
        seen = await chat.alice.wait_for(_entry("image"))
        assert seen["seq"] == sent["seq"]
        assert seen["sender"] == "user"
        assert seen["content"] == content
        mine = await chat.user.wait_for(_entry("image"))
        assert mine["seq"] == sent["seq"]

        got = await chat.download(ALICE, content["attachment_id"])
        assert got.status_code == 200
        assert got.content == PNG
        assert got.headers["content-type"] == "image/png"
        assert got.headers["x-content-type-options"] == "nosniff"
        assert got.headers["cache-control"] == "private, no-store"
        assert got.headers["content-disposition"].startswith("inline;")
        assert "default-src 'none'" in got.headers["content-security-policy"]
        own = await chat.download(chat.user.resume_token, content["attachment_id"])
        assert own.status_code == 200
        assert own.content == PNG


async def test_an_agent_sends_a_file_the_user_gets_as_a_download() -> None:
    async with chatting() as chat:
        text = "Your invoice, été 2026\n".encode()
        answer = await chat.upload(ALICE, text, "text/plain; charset=utf-8", "facture été.txt")
        assert answer.status_code == 201, answer.text
        sent = answer.json()
        assert sent["content_type"] == "file"
        seen = await chat.user.wait_for(_entry("file"))
        assert seen["sender"] == "agent"
        assert seen["agent_id"] == "alice"
        assert seen["content"]["name"] == "facture été.txt"
        got = await chat.download(chat.user.resume_token, sent["content"]["attachment_id"])
        assert got.status_code == 200
        assert got.content == text
        assert got.headers["content-type"].startswith("text/plain")
        disposition = got.headers["content-disposition"]
        assert disposition.startswith("attachment;")
        assert "filename*=UTF-8''facture%20%C3%A9t%C3%A9.txt" in disposition
        assert 'filename="facture _t_.txt"' in disposition


# -- limits and sniffing ---------------------------------------------------------------------


async def test_uploads_past_the_limits_or_of_other_types_are_refused() -> None:
    limits = {"attachments": {"max_bytes": 1024, "max_per_conversation": 2}}
    async with chatting(limits) as chat:
        token = chat.user.resume_token
        big = await chat.upload(token, PNG + bytes(2000), "image/png")
        assert big.status_code == 413
        assert big.json()["error"] == "too_large"
        assert "1024 bytes" in big.json()["message"]
        # A body sent in pieces, with no length announced, is cut off at the limit too.

        async def pieces() -> AsyncIterator[bytes]:
            for _ in range(5):
                yield bytes(512)

        chunked = await chat.upload(token, pieces(), "text/plain")
        assert chunked.status_code == 413

        zip_file = await chat.upload(token, b"PK\x03\x04rest", "application/zip")
        assert zip_file.status_code == 415
        assert zip_file.json()["error"] == "unsupported_type"
        # Declared a picture, but the bytes are not one.
        fake = await chat.upload(token, b"<svg onload=alert(1)>", "image/png")
        assert fake.status_code == 415
        not_text = await chat.upload(token, b"\xff\xfe\x00binary", "text/plain")
        assert not_text.status_code == 415
        empty = await chat.upload(token, b"", "text/plain")
        assert empty.status_code == 400

        # The bytes decide: a PNG declared as text is kept (and shown) as a PNG.
        sniffed = await chat.upload(token, PNG[:500], "text/plain", "x.txt")
        assert sniffed.status_code == 201
        assert sniffed.json()["content"]["mime_type"] == "image/png"
        assert sniffed.json()["content_type"] == "image"
        second = await chat.upload(token, b"hello", "text/plain")
        assert second.status_code == 201
        third = await chat.upload(token, b"again", "text/plain")
        assert third.status_code == 409
        assert third.json()["error"] == "conversation_full"
        # Nothing refused became a message: the two taken are numbered one after the other.
        assert second.json()["seq"] == sniffed.json()["seq"] + 1


async def test_all_the_files_kept_together_are_bounded_too() -> None:
    async with chatting({"attachments": {"max_total_bytes": 2 * len(PNG) + 10}}) as chat:
        token = chat.user.resume_token
        assert (await chat.upload(token, PNG, "image/png")).status_code == 201
        assert (await chat.upload(token, PNG, "image/png")).status_code == 201
        full = await chat.upload(token, PNG, "image/png")
        assert full.status_code == 507
        assert full.json()["error"] == "storage_full"


async def test_the_total_follows_what_is_kept_and_removed(tmp_path: Path) -> None:
    def keep(files: AttachmentStore, conversation_id: str, data: bytes) -> Any:
        return files.keep(
            conversation_id,
            name="a.txt",
            mime_type="text/plain",
            data=data,
            sender="user",
            max_count=10,
            max_bytes=100,
            max_total=10,
        )

    files = AttachmentStore(tmp_path / "attachments")
    first = await keep(files, "c1", b"12345678")
    with pytest.raises(NoRoom) as refused:
        await keep(files, "c2", b"123")
    assert refused.value.everywhere
    await files.remove("c1", first.attachment_id)
    await keep(files, "c2", b"123")
    # A fresh store (a restart) counts what is on disk.
    with pytest.raises(NoRoom):
        await keep(AttachmentStore(tmp_path / "attachments"), "c3", b"12345678")


def test_sniffing_and_names() -> None:
    assert sniff(PNG) == "image/png"
    assert sniff(b"\xff\xd8\xff\xe0JFIF") == "image/jpeg"
    assert sniff(b"GIF89a...") == "image/gif"
    assert sniff(b"RIFF\x00\x00\x00\x00WEBPVP8 ") == "image/webp"
    assert sniff(b"%PDF-1.7") == "application/pdf"
    assert sniff(b"hello") is None
    limits = AttachmentLimits()
    assert check_upload("application/pdf", b"not a pdf", limits) != "application/pdf"
    assert check_upload(None, b"%PDF-1.4 ...", limits) == "application/pdf"
    assert clean_name("../../etc/passwd") == "passwd"
    assert clean_name("C:\\Users\\me\\photo.jpg") == "photo.jpg"
    assert clean_name("a\u202egpj.exe\x00") == "agpj.exe"
    assert clean_name("") == "attachment"
    assert clean_name("x" * 500) == "x" * 200


def test_the_config_reads_and_checks_the_attachment_keys() -> None:
    config = from_mapping(
        {"attachments": {"max_bytes": 2048, "allowed_types": ["image/png"]}}, source="t"
    )
    assert config.attachments.max_bytes == 2048
    assert config.attachments.allowed_types == ("image/png",)
    assert from_mapping({}).attachments == AttachmentLimits()
    with pytest.raises(ConfigError) as refused:
        from_mapping({"attachments": {"max_bytes": 0, "allowed_types": ["PNG"], "max_files": 3}})
    problems = "\n".join(refused.value.problems)
    assert "attachments.max_bytes" in problems
    assert "attachments.allowed_types" in problems
    assert "attachments.max_files: unknown key" in problems


# -- who may --------------------------------------------------------------------------------


async def test_only_the_conversations_parties_upload_and_download() -> None:
    async with chatting() as chat:
        sent = await chat.upload(chat.user.resume_token, PNG, "image/png")
        attachment_id = sent.json()["content"]["attachment_id"]
        async with connect_user(chat.server.ws_url) as stranger:
            await stranger.say_text("hi")
            other_user = stranger.resume_token

        # No token, or one nobody issued.
        basic = {"authorization": "Basic YTpi"}
        assert (await chat.http.post(chat.path(), content=PNG, headers=basic)).status_code == 401
        assert (await chat.http.post(chat.path(), content=PNG)).status_code == 401
        assert (await chat.upload("forged.token", PNG, "image/png")).status_code == 401
        assert (await chat.download(None, attachment_id)).status_code == 401
        assert (await chat.download("forged.token", attachment_id)).status_code == 401
        # Another conversation's user.
        refused = await chat.upload(other_user, PNG, "image/png")
        assert refused.status_code == 403
        assert refused.json()["error"] == "forbidden"
        assert (await chat.download(other_user, attachment_id)).status_code == 404
        # Bob serves another bot: he may neither write into the chat nor read its files.
        bob = await chat.upload(BOB, PNG, "image/png")
        assert bob.status_code == 403
        assert bob.json()["error"] == "not_assigned"
        assert (await chat.download(BOB, attachment_id)).status_code == 404
        # Carol serves the bot but does not hold the chat: she may read what she could read
        # in its transcript, not write into it.
        assert (await chat.upload(CAROL, PNG, "image/png")).status_code == 403
        assert (await chat.download(CAROL, attachment_id)).status_code == 200
        # An id that is not one, and one that does not exist.
        assert (await chat.download(ALICE, "..%2F..%2Fsecret")).status_code == 404
        assert (await chat.download(ALICE, "A" * 24)).status_code == 404


async def test_a_user_sends_files_only_to_an_agent() -> None:
    async with serving() as server, connect_user(server.ws_url) as user:
        await user.say_text("hello")
        async with httpx.AsyncClient(base_url=server.http_url) as http:
            answer = await http.post(
                f"/v1/conversations/{user.conversation_id}/attachments",
                content=b"hi",
                headers={"authorization": f"Bearer {user.resume_token}"},
            )
            assert answer.status_code == 409
            assert answer.json()["error"] == "no_session"
            preflight = await http.options(
                f"/v1/conversations/{user.conversation_id}/attachments",
                headers={
                    "origin": "https://shop.example.com",
                    "access-control-request-method": "POST",
                    "access-control-request-headers": "authorization, content-type",
                },
            )
            assert preflight.status_code == 204
            assert preflight.headers["access-control-allow-origin"] == "*"
            assert "authorization" in preflight.headers["access-control-allow-headers"]


async def test_no_files_for_a_bot_whose_agents_use_a_helpdesk() -> None:
    helpdesk = {
        "kind": "webhook",
        "options": {
            "url": "http://127.0.0.1:9/events",
            "secret": "helpdesk-secret-for-attachment-tests",
            "api_token": "helpdesk-token-for-attachment-tests",
        },
    }
    config = {"bots": {**CONFIG["bots"], "shop": {"adapter": "demo", "livechat": helpdesk}}}
    async with (
        serving(config) as server,
        connect_user(server.ws_url, bot_id="shop") as user,
        httpx.AsyncClient(base_url=server.http_url) as http,
    ):
        await user.say_text("hello")
        answer = await http.post(
            f"/v1/conversations/{user.conversation_id}/attachments",
            content=PNG,
            headers={"authorization": f"Bearer {user.resume_token}"},
        )
        assert answer.status_code == 409
        assert answer.json()["error"] == "not_supported"


# -- durability and retention ----------------------------------------------------------------


async def test_attachments_outlive_a_restart_with_the_sqlite_store(tmp_path: Path) -> None:
    store = {"store": {"data_dir": str(tmp_path / "data")}}
    async with chatting(store) as chat:
        answer = await chat.upload(chat.user.resume_token, PNG, "image/png", "cat.png")
        assert answer.status_code == 201
        sent = answer.json()
        token, conversation_id = chat.user.resume_token, chat.conversation_id
    files = list((tmp_path / "data" / FOLDER / folder_name(conversation_id)).iterdir())
    assert len(files) == 2  # the bytes and their description
    async with (
        serving(store) as server,
        connect_user(server.ws_url, resume_token=token, last_seq=0) as user,
        httpx.AsyncClient(base_url=server.http_url) as http,
    ):
        # The message is in the conversation, and the file behind it is still served.
        replayed = await user.wait_for(_entry("image"))
        assert replayed["seq"] == sent["seq"]
        got = await http.get(sent["content"]["url"], headers={"authorization": f"Bearer {token}"})
        assert got.status_code == 200
        assert got.content == PNG


async def test_a_server_with_retention_deletes_attachments_with_their_conversation(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "data"
    config = {"store": {"data_dir": str(data_dir), "retention_days": 7}}
    async with chatting(config, prune_every=0.05) as chat:
        sent = await chat.upload(chat.user.resume_token, PNG, "image/png")
        assert sent.status_code == 201
        folder = data_dir / FOLDER / folder_name(chat.conversation_id)
        assert folder.is_dir()
        await chat.alice.end(chat.conversation_id)
        ended = await chat.user.wait_for(
            lambda f: f.get("content", {}).get("code") == "session_ended"
        )
        # The bot answers the session's end; once it has, nothing more is written...
        await chat.user.wait_for(
            lambda f: f.get("type") == "entry" and f["sender"] == "bot" and f["seq"] > ended["seq"]
        )
        # ...and the conversation falls quiet for longer than the retention period...
        await chat.user.close()
        await trio.to_thread.run_sync(_backdate, database_path(data_dir), chat.conversation_id)
        # ...and the next rounds delete it, then its files.
        with trio.fail_after(10):
            while folder.exists():  # noqa: ASYNC110
                await trio.sleep(0.02)
        assert await chat.server.services.board.store.load(chat.conversation_id) is None
        gone = await chat.download(ALICE, sent.json()["content"]["attachment_id"])
        assert gone.status_code == 404


def _backdate(path: Path, conversation_id: str, days: float = 40) -> None:
    """Make a conversation and its messages look untouched for ``days`` days."""
    then = time.time() - days * 86400
    with sqlite3.connect(path, timeout=5) as db:
        db.execute("UPDATE conversations SET updated_at = ? WHERE id = ?", (then, conversation_id))
        for table in ("messages", "recent"):  # a running server's last messages are in recent
            db.execute(
                f"UPDATE {table} SET at = ? WHERE conversation_id = ?", (then, conversation_id)
            )
    db.close()


async def test_switchover_prune_deletes_the_attachments_with_their_conversation(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "data"
    path = database_path(data_dir)
    data_dir.mkdir()
    async with open_sqlite_store(path) as store:
        for conversation_id in ("kept", "pruned"):
            await store.record(ConversationState(conversation_id, "demo", "u", {}, 1), [])
        files = AttachmentStore(data_dir / FOLDER)
        for conversation_id in ("kept", "pruned"):
            await files.keep(
                conversation_id,
                name="a.txt",
                mime_type="text/plain",
                data=b"x",
                sender="user",
                max_count=5,
                max_bytes=100,
            )
    await trio.to_thread.run_sync(_backdate, path, "pruned")
    command = [sys.executable, "-m", "transport.cli", "prune", "--older-than-days", "30"]
    pruned = await trio.to_thread.run_sync(
        lambda: subprocess.run(
            [*command, "--data-dir", str(data_dir)],
            capture_output=True,
            text=True,
            timeout=30,
        )
    )
    assert pruned.returncode == 0, pruned.stderr
    assert "deleted 1 conversation " in pruned.stdout
    assert (data_dir / FOLDER / "kept").is_dir()
    assert not (data_dir / FOLDER / "pruned").exists()
    # Nothing left to delete the next time.
    async with open_sqlite_store(path) as store:
        assert await sweep_attachments(data_dir, store) == 0


async def test_odd_conversation_ids_stay_inside_the_folder(tmp_path: Path) -> None:
    files = AttachmentStore(tmp_path / "attachments")
    kept = await files.keep(
        "../../escape",
        name="a",
        mime_type="text/plain",
        data=b"x",
        sender="user",
        max_count=1,
        max_bytes=10,
    )
    assert [p.parent.parent for p in (tmp_path / "attachments").glob("*/*")] == [
        tmp_path / "attachments"
    ] * 2
    found = await files.read("../../escape", kept.attachment_id)
    assert found is not None
    assert found[1] == b"x"
    assert await files.read("other", kept.attachment_id) is None
