"""What the desk frame tells an agent about users, over real sockets: the waiting user's name
and last message, whether the user of a held chat is connected (and since when), and each
bot's canned responses. Every frame is checked against the protocol's schemas."""

from __future__ import annotations

from collections.abc import Callable

from actors import SESSION_START, BotSettings
from actors.model.settings import SIGN_OFF_RESPONSE, CannedResponse
from transport.client import Frame

from .support.ws import running_ws_server

CANNED = (CannedResponse("hello", "Hi, how can I help?"),)


def desk_where(check: Callable[[Frame], bool]) -> Callable[[Frame], bool]:
    return lambda frame: frame["type"] == "desk" and check(frame)


async def test_the_desk_frame_says_who_waits_what_they_wrote_and_whether_they_are_there() -> None:
    settings = BotSettings(session_timeout=3600, grace_period=30, canned_responses=CANNED)
    async with running_ws_server(settings=settings) as harness, harness.agent("alice") as alice:
        first = await alice.wait_for(lambda frame: frame["type"] == "desk")
        canned = first["canned_responses"]
        assert canned["demo"] == [
            {"shortcut": "hello", "text": "Hi, how can I help?"},
            {"shortcut": SIGN_OFF_RESPONSE.shortcut, "text": SIGN_OFF_RESPONSE.text},
        ]
        await alice.set_presence("away")  # picks chats up by hand
        async with harness.user(bot_id="demo", metadata={"name": "  Uma Ruiz "}) as user:
            await user.click(SESSION_START)
            waiting = await alice.wait_for(desk_where(lambda frame: bool(frame["queue"])))
            item = waiting["queue"][0]
            assert (item["user_name"], item["last_message"]) == ("Uma Ruiz", "")
            assert item["last_message_at"] is None
            await user.say_text("my   parcel\nis late")
            wrote = await alice.wait_for(
                desk_where(lambda frame: frame["queue"][0]["last_message"] != "")
            )
            assert wrote["queue"][0]["last_message"] == "my parcel is late"
            assert isinstance(wrote["queue"][0]["last_message_at"], float)

            await alice.claim(user.conversation_id)
            held = await alice.wait_for(desk_where(lambda frame: bool(frame["chats"])))
            chat = held["chats"][0]
            assert chat["user_connected"] is True
            connected_since = chat["user_since"]
            assert isinstance(connected_since, float)
            conversation = user.conversation_id
            resume = user.resume_token
        # The user's only client is gone: the agent sees since when.
        left = await alice.wait_for(
            desk_where(lambda frame: frame["chats"][0]["user_connected"] is False)
        )
        assert left["chats"][0]["user_since"] >= connected_since
        async with harness.user(resume_token=resume, last_seq=0) as back:
            assert back.conversation_id == conversation
            again = await alice.wait_for(
                desk_where(lambda frame: frame["chats"][0]["user_connected"] is True)
            )
            assert again["chats"][0]["user_since"] >= left["chats"][0]["user_since"]
            # A second tab of the same user comes and goes: the user is still there.
            async with harness.user(resume_token=resume, last_seq=0):
                pass
            await alice.set_presence("away")
            still = await alice.wait_for(desk_where(lambda frame: frame["presence"] == "away"))
            assert still["chats"][0]["user_connected"] is True
            await alice.end(conversation)
            ended = await alice.wait_for(desk_where(lambda frame: not frame["chats"]))
            assert ended["queue"] == []
