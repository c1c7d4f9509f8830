"""``[bots.<id>.livechat.options]`` of a ``kind = "chatwoot"`` platform (docs/platforms.md)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from transport.bots.options import OptionReader
from transport.livechat.platform import ENGINE_OPTION_KEYS, read_engine_options
from transport.signing import MIN_SECRET_LENGTH

OPTION_KEYS = (
    frozenset(
        {
            "base_url",
            "account_id",
            "inbox_id",
            "api_token",
            "api_token_env",
            "webhook_secret",
            "webhook_secret_env",
            "url_token",
            "url_token_env",
            "on_resolve",
            "reconcile_every",
        }
    )
    | ENGINE_OPTION_KEYS
)
#: What resolving a conversation in Chatwoot does to the session: ends it, or offers the
#: user the sign-off button (the first is the default).
ON_RESOLVE = ("end", "offer")
#: Chatwoot's access tokens are 24 characters; anything much shorter is a typo.
MIN_API_TOKEN_LENGTH = 16


@attrs.frozen
class ChatwootOptions:
    """Where the Chatwoot account is and how Switchover talks to it.

    ``api_token``: an agent's (or agent bot's) access token, sent as ``api_access_token``.
    ``webhook_secret``: the API inbox's secret, which Chatwoot signs its webhooks with;
    ``url_token``: a secret carried in the webhook URL (``?token=``) for installations that
    sign nothing. At least one of the two is set; each one set is checked.
    """

    base_url: str
    account_id: int
    inbox_id: int
    api_token: str
    webhook_secret: str | None = None
    url_token: str | None = None
    on_resolve: str = "end"
    reconcile_every: float = 30.0
    timeout: float = 10.0
    workers: int = 4
    unreachable_after: float = 30.0
    max_backoff: float = 60.0

    @property
    def api_url(self) -> str:
        """The account's Application API root."""
        return f"{self.base_url.rstrip('/')}/api/v1/accounts/{self.account_id}"

    @classmethod
    def read(
        cls, bot_id: str, options: Mapping[str, Any], environ: Mapping[str, str] | None = None
    ) -> ChatwootOptions:
        """Raises :class:`~transport.errors.ConfigError` naming every bad key."""
        reader = OptionReader(bot_id, options, table="livechat.options", environ=environ)
        base_url = reader.url("base_url")
        account_id = _identifier(reader, "account_id")
        inbox_id = _identifier(reader, "inbox_id")
        api_token = reader.secret("api_token", min_length=MIN_API_TOKEN_LENGTH)
        webhook_secret = url_token = None
        given = {name for name in options if name.removesuffix("_env") in _WEBHOOK_AUTH}
        if not given:
            reader.problem(
                "webhook_secret",
                "give webhook_secret (the inbox's signing secret), url_token (a secret in the "
                "webhook URL), or both (each may be <name>_env)",
            )
        if {"webhook_secret", "webhook_secret_env"} & given:
            webhook_secret = reader.secret("webhook_secret", min_length=MIN_SECRET_LENGTH)
        if {"url_token", "url_token_env"} & given:
            url_token = reader.secret("url_token", min_length=MIN_SECRET_LENGTH)
        on_resolve = reader.string("on_resolve") or "end"
        if on_resolve not in ON_RESOLVE:
            reader.problem(
                "on_resolve", f"must be one of {', '.join(ON_RESOLVE)}, got {on_resolve!r}"
            )
        reconcile_every = reader.number("reconcile_every", 30.0)
        engine = read_engine_options(reader)
        reader.done(OPTION_KEYS)
        assert base_url is not None and api_token is not None
        return cls(
            base_url,
            account_id,
            inbox_id,
            api_token,
            webhook_secret,
            url_token,
            on_resolve,
            reconcile_every,
            **engine,
        )


_WEBHOOK_AUTH = ("webhook_secret", "url_token")


def _identifier(reader: OptionReader, name: str) -> int:
    """A Chatwoot id: a whole number of at least 1, required."""
    if name not in reader.options:
        reader.problem(name, "is required (a number from Chatwoot's URLs or settings)")
        return 0
    return reader.integer(name, 0)
