from __future__ import annotations

from actors import (
    SESSION_END,
    SESSION_START,
    Accepted,
    AgentSays,
    Content,
    Desk,
    Entry,
    Party,
    Presence,
    QueuePosition,
    Switchboard,
    Transcript,
    UserSays,
)

from .conftest import EchoBot, RecordingSink, notice, open_watched


async def test_a_whole_session(
    board: Switchboard, echo_bot: EchoBot, autojump_clock: object
) -> None:
    desk = board.backends["desk"]
    assert isinstance(desk, Desk)
    conv, user = await open_watched(board, "demo", metadata={"name": "Uma"})
    outcome = await board.ask(conv, UserSays(Content.text("hello")))
    assert outcome == Accepted(1)
    await user.wait_for(lambda i: isinstance(i, Entry) and i.content.text_value == "echo: hello")

    await board.ask(conv, UserSays(Content.payload(SESSION_START)))
    await user.wait_for(lambda item: isinstance(item, QueuePosition))
    await board.ask(conv, UserSays(Content.text("anyone?")))

    agent = RecordingSink()
    desk.attach("alice", agent)
    desk.set_presence("alice", Presence.ONLINE)
    transcript = await agent.wait_for(lambda i: isinstance(i, Transcript))
    assert isinstance(transcript, Transcript)
    assert "anyone?" in [e.content.text_value for e in transcript.entries]
    assert transcript.user_metadata == {"name": "Uma"}
    await user.wait_for(notice("agent_joined"))

    await board.ask(conv, AgentSays("alice", Content.text("Hi, Alice here")))
    await user.wait_for(lambda i: isinstance(i, Entry) and i.content.text_value == "Hi, Alice here")
    await board.ask(conv, AgentSays("alice", Content.text("Bye LIVECHAT_SESSION_END")))
    await user.wait_for(lambda i: isinstance(i, Entry) and i.metadata.get("sign_off"))
    await board.ask(conv, UserSays(Content.text("wait, one more thing")))
    await agent.wait_for(
        lambda i: isinstance(i, Entry) and i.content.text_value == "wait, one more thing"
    )
    await board.ask(conv, UserSays(Content.payload(SESSION_END)))
    await user.wait_for(notice("session_ended"))
    await agent.wait_for(notice("session_ended"))
    # The bot saw hello, then END, and nothing in between.
    events = await echo_bot.wait_for_events(2)
    assert [e.content.content for e in events] == [
        {"text": "hello"},
        {"payload": SESSION_END},
    ]
    seqs = [e.seq for e in user.entries()]
    assert seqs == sorted(seqs)
    during_session = ("anyone?", "wait, one more thing")
    assert all(
        Party.BOT not in e.audience
        for e in user.entries()
        if e.content.text_value in during_session
    )
