"""The config: embedded defaults, TOML files, environment overrides, and errors that name
their key."""

from __future__ import annotations

import os
from pathlib import Path

import attrs
import pytest

from transport.config import (
    DEFAULT_AGENT,
    DEFAULT_BOT,
    StoreConfig,
    embedded_defaults,
    from_mapping,
    load,
    load_file,
    signing_secret,
    with_kept_demo_tokens,
)
from transport.errors import ConfigError

EXAMPLE = Path(__file__).parent.parent / "docs" / "examples" / "switchover.toml"


def problems_of(text: str, tmp_path: Path) -> list[str]:
    path = tmp_path / "switchover.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_file(path)
    return caught.value.problems


def test_embedded_defaults_serve_the_demo_bot_with_one_generated_agent() -> None:
    config = embedded_defaults()
    assert list(config.bots) == [DEFAULT_BOT]
    assert config.bots[DEFAULT_BOT].adapter == "demo"
    agent = config.agents[DEFAULT_AGENT]
    assert agent.generated and len(agent.token) >= 20
    assert agent.bots == {DEFAULT_BOT}
    assert config.generated_agents == [agent]
    assert (config.listeners.host, config.listeners.ws_port, config.listeners.http_port) == (
        "127.0.0.1",
        8765,
        8080,
    )
    # Conversations survive a restart out of the box: SQLite in ./data.
    assert config.store == StoreConfig("sqlite", Path("data").resolve())
    # Every start makes up a new token: no two servers share a default secret.
    assert embedded_defaults().agents[DEFAULT_AGENT].token != agent.token


def test_a_full_file_is_read(tmp_path: Path) -> None:
    path = tmp_path / "conf" / "switchover.toml"
    path.parent.mkdir()
    path.write_text(
        """
secret = "sign-with-this"
default_bot = "support"

[listeners]
host = "0.0.0.0"
ws_port = 9000
http_port = 9001
public_ws_url = "wss://chat.example.com/ws"

[limits]
max_frame_bytes = 4096
rate = 5

[store]
data_dir = "data"

[logging]
format = "JSON"
level = "debug"

[bots.support]
adapter = "demo"
token = "support-bot-token"
[bots.support.settings]
session_timeout = 1
end_message = "Bye?"
queue_timeout = 30

[bots.sales]

[agents.alice]
name = "Alice"
token = "alice-token-1234"
capacity = 2
bots = ["support"]

[agents.bob]
token = "bob-token-56789012"
"""
    )
    config = load_file(path)
    assert config.secret == "sign-with-this"
    assert config.default_bot == "support"
    assert config.listeners.host == "0.0.0.0"
    assert (config.listeners.ws_port, config.listeners.http_port) == (9000, 9001)
    assert config.listeners.public_ws_url == "wss://chat.example.com/ws"
    assert config.limits.max_frame_bytes == 4096 and config.limits.rate == 5.0
    assert config.store.kind == "sqlite"
    assert config.store.data_dir == (path.parent / "data").resolve()
    assert (config.logging.format, config.logging.level) == ("json", "debug")
    support = config.bots["support"].settings
    assert support.session_timeout == 1.0 and isinstance(support.session_timeout, float)
    assert support.end_message == "Bye?" and support.queue_timeout == 30.0
    assert config.bots["support"].token == "support-bot-token"
    assert config.bots["sales"].adapter == "demo"
    alice, bob = config.agents["alice"], config.agents["bob"]
    assert (alice.name, alice.capacity, alice.bots) == ("Alice", 2, {"support"})
    assert (bob.name, bob.capacity, bob.bots) == ("bob", None, {"support", "sales"})
    assert config.generated_agents == []


def test_environment_overrides_the_file_and_flags_override_the_environment(
    tmp_path: Path,
) -> None:
    path = tmp_path / "switchover.toml"
    path.write_text('[listeners]\nws_port = 9000\nhttp_port = 9001\nhost = "10.0.0.1"\n')
    environ = {
        "SWITCHOVER_WS_PORT": "9100",
        "SWITCHOVER_HOST": "127.0.0.2",
        "SWITCHOVER_DATA_DIR": str(tmp_path / "env-data"),
        "SWITCHOVER_SECRET": "from-env",
        "SWITCHOVER_LOG_FORMAT": "json",
    }
    config = load(path, environ=environ, flags={"ws_port": 9200, "http_port": None})
    assert config.listeners.ws_port == 9200  # flag beats environment
    assert config.listeners.http_port == 9001  # file, nothing overrides it
    assert config.listeners.host == "127.0.0.2"  # environment beats file
    assert config.store.kind == "sqlite" and config.store.data_dir == tmp_path / "env-data"
    assert config.secret == "from-env"
    assert config.logging.format == "json"


def test_bad_environment_values_are_named() -> None:
    with pytest.raises(ConfigError) as caught:
        load(environ={"SWITCHOVER_WS_PORT": "eighty", "SWITCHOVER_LOG_FORMAT": "xml"})
    assert caught.value.problems == [
        "SWITCHOVER_WS_PORT: must be a port number, got 'eighty'",
        "SWITCHOVER_LOG_FORMAT: must be one of text, json, got 'xml'",
    ]
    with pytest.raises(ConfigError, match=r"--http-port: must be between 0 and 65535"):
        load(environ={}, flags={"http_port": 70000})


def test_every_problem_is_reported_with_its_key(tmp_path: Path) -> None:
    problems = problems_of(
        """
colour = "blue"
[listeners]
ws_port = "eighty"
http_port = 99999
[bots.demo.settings]
session_timeout = 0
end_message = 3
sesion_timeout = 5
[agents.alice]
name = "Alice"
bots = ["demo", "nobody"]
[agents.bob]
token = "same-token-here-twice"
[agents.carol]
token = "same-token-here-twice"
capacity = 0
""",
        tmp_path,
    )
    assert problems == [
        "colour: unknown key; known keys: admins, agents, attachments, bots, default_bot, limits, "
        "listeners, logging, secret, store",
        "bots.demo.settings.sesion_timeout: unknown key; known keys: agent_capacity, "
        "canned_responses, end_button_label, end_message, grace_period, queue_timeout, "
        "session_timeout, unavailable_message",
        "bots.demo.settings.session_timeout: must be positive, got 0",
        "bots.demo.settings.end_message: must be a string, got an integer (3)",
        "agents.alice.token: is required (the secret this agent signs in with)",
        "agents.alice.bots: names unknown bot 'nobody'; known: demo",
        "agents.carol.capacity: must be at least 1, got 0",
        "listeners.ws_port: must be an integer, got a string ('eighty')",
        "listeners.http_port: must be between 0 and 65535, got 99999",
        "agents.carol.token: is the same token as agents.bob.token",
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "[store]\nkind = 'redis'\n",
            "store.kind: must be one of sqlite, memory, valkey, got 'redis'",
        ),
        ("bots = 3\n", "bots: must be a table, got an integer"),
        ("[bots]\n", "bots: at least one bot is required"),
        ("[bots.x]\nbackend = 'zendesk'\n", "bots.x.backend: unknown livechat backend 'zendesk'"),
        ("default_bot = 'nope'\n", "default_bot: names unknown bot 'nope'; known: demo"),
        ("[limits]\nrate = -1\n", "limits.rate: must be positive, got -1"),
        ("[limits]\nburst = 1.5\n", "limits.burst: must be an integer, got a number (1.5)"),
        ("[limits]\nresume_token_max_age = 0\n", "limits.resume_token_max_age: must be positive"),
        ("[limits]\nresume_token_max_age = -5\n", "limits.resume_token_max_age: must be positive"),
        ("[limits]\nresume_token_max_age = inf\n", "limits: invalid limits: resume_token_max_age"),
        ("[logging]\nlevel = 'loud'\n", "logging.level: must be one of debug, info"),
        ("[agents.a]\ntoken = ''\n", "agents.a.token: must be a non-empty string"),
        ("[store]\nretention_days = 0\n", "store.retention_days: must be positive, got 0"),
        ("[store]\nretention_days = -3\n", "store.retention_days: must be positive, got -3"),
        ("[store]\nretention_days = '30'\n", "store.retention_days: must be a number"),
        ("[store]\nretention_days = true\n", "store.retention_days: must be a number"),
        ("[store]\nretention_days = inf\n", "store.retention_days: must be a finite number"),
        ("[store]\nretention_days = nan\n", "store.retention_days: must be a finite number"),
        ("[bots.b]\nadapter = 'connected'\n", 'bots.b.token: is required with adapter "connected"'),
    ],
)
def test_single_mistakes(text: str, expected: str, tmp_path: Path) -> None:
    problems = problems_of(text, tmp_path)
    assert any(problem.startswith(expected) for problem in problems), problems


def test_unreadable_and_invalid_files_say_so(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"missing\.toml: cannot read the config file"):
        load_file(tmp_path / "missing.toml")
    (tmp_path / "broken.toml").write_text("[bots\n")
    with pytest.raises(ConfigError, match=r"broken\.toml: not valid TOML"):
        load_file(tmp_path / "broken.toml")


def test_a_file_without_bots_serves_the_demo_bot() -> None:
    config = from_mapping({"agents": {"a": {"token": "tok-a-1234567890ab"}}})
    assert list(config.bots) == ["demo"]
    assert config.agents["a"].bots == {"demo"}


def test_the_example_config_is_valid() -> None:
    config = load_file(EXAMPLE)
    assert config.bots and config.agents
    assert config.limits.resume_token_max_age == 30 * 24 * 3600


def test_the_signing_secret_is_made_once_and_kept(tmp_path: Path) -> None:
    config = load(environ={"SWITCHOVER_DATA_DIR": str(tmp_path / "data")})
    first = signing_secret(config)
    assert len(first) >= 32
    path = tmp_path / "data" / "secret"
    assert path.stat().st_mode & 0o077 == 0  # only its owner may read it
    assert signing_secret(config) == first
    configured = load(environ={"SWITCHOVER_SECRET": "given", "SWITCHOVER_DATA_DIR": "x"})
    assert signing_secret(configured) == "given"
    # The defaults keep it in ./data, so resume tokens outlive a restart.
    assert signing_secret(embedded_defaults()) == signing_secret(embedded_defaults())
    # Without a data directory nothing is kept, so each process has its own.
    in_memory = from_mapping({"store": {"kind": "memory"}})
    assert in_memory.store.data_dir is None
    assert signing_secret(in_memory) != signing_secret(in_memory)


def test_environment_values_that_are_not_utf8_are_refused() -> None:
    # os.environ decodes bytes that are not UTF-8 to lone surrogates (surrogateescape).
    with pytest.raises(ConfigError, match="SWITCHOVER_SECRET: is not valid UTF-8 text"):
        load(environ={"SWITCHOVER_SECRET": "abc\udcff"})


def test_the_widget_may_be_framed_only_by_the_origins_named() -> None:
    assert from_mapping({}).listeners.widget_frame_ancestors == ()
    named = from_mapping({"listeners": {"widget_frame_ancestors": ["https://shop.example.com"]}})
    assert named.listeners.widget_frame_ancestors == ("https://shop.example.com",)
    for bad in ("https://a.example", ["https://a.example; script-src *"], [""], [3]):
        with pytest.raises(ConfigError, match="widget_frame_ancestors"):
            from_mapping({"listeners": {"widget_frame_ancestors": bad}})


def test_an_empty_secret_file_counts_as_absent_and_is_replaced_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # What a power cut right after a first start could leave: the server must still start.
    config = load(environ={"SWITCHOVER_DATA_DIR": str(tmp_path / "data")})
    path = tmp_path / "data" / "secret"
    path.parent.mkdir()
    path.write_text("\n")
    synced: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd))[1])
    secret = signing_secret(config)
    assert len(secret) >= 32
    assert path.read_text().strip() == secret
    assert path.stat().st_mode & 0o077 == 0
    assert synced, "the secret is flushed to disk before it is used"
    assert [p.name for p in path.parent.iterdir()] == ["secret"]  # no temporary left behind
    assert signing_secret(config) == secret


def test_a_secret_file_others_may_read_is_warned_about(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = load(environ={"SWITCHOVER_DATA_DIR": str(tmp_path)})
    path = tmp_path / "secret"
    path.write_text("kept-secret-of-enough-length-0123456789\n")
    path.chmod(0o644)
    with caplog.at_level("WARNING", logger="switchover.config"):
        assert signing_secret(config) == "kept-secret-of-enough-length-0123456789"
    assert "may be read by other users" in caplog.text


def test_the_demo_token_is_kept_across_restarts(tmp_path: Path) -> None:
    first = with_kept_demo_tokens(load(environ={"SWITCHOVER_DATA_DIR": str(tmp_path)}))
    again = with_kept_demo_tokens(load(environ={"SWITCHOVER_DATA_DIR": str(tmp_path)}))
    [agent] = first.generated_agents
    assert again.agents[DEFAULT_AGENT].token == agent.token
    kept = tmp_path / f"demo-agent-token-{DEFAULT_AGENT}"
    assert kept.read_text().strip() == agent.token
    assert kept.stat().st_mode & 0o077 == 0
    # A configured agent's token is never replaced, and a file is only for generated ones.
    configured = with_kept_demo_tokens(
        attrs.evolve(
            from_mapping({"agents": {"ann": {"token": "t" * 20}}}),
            store=StoreConfig("sqlite", tmp_path / "other"),
        )
    )
    assert configured.agents["ann"].token == "t" * 20
    assert not (tmp_path / "other").exists()


def test_without_a_data_directory_each_start_makes_a_new_demo_token() -> None:
    tokens = {
        with_kept_demo_tokens(attrs.evolve(embedded_defaults(), store=StoreConfig("memory")))
        .agents[DEFAULT_AGENT]
        .token
        for _ in range(2)
    }
    assert len(tokens) == 2


def test_retention_is_off_unless_asked_for_and_survives_overrides(tmp_path: Path) -> None:
    assert from_mapping({}).store.retention_days is None
    config = from_mapping({"store": {"data_dir": "data", "retention_days": 30}}, base=tmp_path)
    assert config.store.retention_days == 30.0 and config.store.kind == "sqlite"
    half_a_day = from_mapping({"store": {"retention_days": 0.5}})
    assert half_a_day.store.retention_days == 0.5
    path = tmp_path / "switchover.toml"
    path.write_text("[store]\nretention_days = 7\n")
    # Moving the data directory by environment keeps the retention asked for in the file.
    moved = load(path, environ={"SWITCHOVER_DATA_DIR": str(tmp_path / "elsewhere")})
    assert moved.store.retention_days == 7.0
    assert moved.store.data_dir == (tmp_path / "elsewhere").resolve()


def test_a_connected_bot_is_configured_with_its_token() -> None:
    config = from_mapping(
        {"bots": {"relay": {"adapter": "connected", "token": "relay-token-1234567"}}}
    )
    assert config.bots["relay"].adapter == "connected"
    assert config.bots["relay"].token == "relay-token-1234567"


def test_the_websocket_listener_is_a_setting(tmp_path: Path) -> None:
    assert embedded_defaults().listeners.websocket == "fast"
    path = tmp_path / "switchover.toml"
    path.write_text('[listeners]\nwebsocket = "trio-websocket"\n')
    assert load_file(path).listeners.websocket == "trio-websocket"
    flagged = load(path, environ={"SWITCHOVER_WS_IMPL": "fast"}, flags={})
    assert flagged.listeners.websocket == "fast"
    assert problems_of('[listeners]\nwebsocket = "tornado"\n', tmp_path) == [
        "listeners.websocket: must be one of fast, trio-websocket, got 'tornado'"
    ]
    with pytest.raises(ConfigError) as caught:
        load(None, environ={}, flags={"ws_impl": "tornado"})
    assert caught.value.problems == [
        "--ws-impl: must be one of fast, trio-websocket, got 'tornado'"
    ]
