"""``[bots.<id>.livechat.options]`` of a ``kind = "gorgias"`` platform (docs/configuration.md)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import attrs

from transport.bots.options import OptionReader
from transport.livechat.platform import ENGINE_OPTION_KEYS, read_engine_options
from transport.signing import MIN_SECRET_LENGTH

OPTION_KEYS = (
    frozenset(
        {
            "domain",
            "base_url",
            "email",
            "api_key",
            "api_key_env",
            "webhook_token",
            "webhook_token_env",
            "reconcile_every",
            "requests_per_window",
            "window",
        }
    )
    | ENGINE_OPTION_KEYS
)
#: Gorgias API keys are long; anything this short is a mistake in the file.
MIN_API_KEY_LENGTH = 8
_DOMAIN = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")


@attrs.frozen
class GorgiasOptions:
    """How to reach one Gorgias account and how hard to use it.

    ``base_url``: ``https://<domain>.gorgias.com`` (``base_url`` itself only to point at
    another server, a test's fake). ``email`` and ``api_key``: the REST API credentials
    (HTTP Basic). ``webhook_token``: the secret Gorgias's HTTP integration sends back to
    Switchover. ``requests_per_window`` per ``window`` seconds: the account's API rate
    limit, shared by every call this bot makes.
    """

    base_url: str
    email: str
    api_key: str
    webhook_token: str
    reconcile_every: float = 30.0
    requests_per_window: int = 40
    window: float = 20.0
    timeout: float = 10.0
    workers: int = 4
    unreachable_after: float = 30.0
    max_backoff: float = 60.0

    @classmethod
    def read(
        cls, bot_id: str, options: Mapping[str, Any], environ: Mapping[str, str] | None = None
    ) -> GorgiasOptions:
        """Raises :class:`~transport.errors.ConfigError` naming every bad key."""
        reader = OptionReader(bot_id, options, table="livechat.options", environ=environ)
        base_url = _base_url(reader)
        email = reader.string("email", required=True)
        if email is not None and "@" not in email:
            reader.problem("email", f"must be the email address of the API user, got {email!r}")
        api_key = reader.secret("api_key", min_length=MIN_API_KEY_LENGTH)
        webhook_token = reader.secret("webhook_token", min_length=MIN_SECRET_LENGTH)
        reconcile_every = reader.number("reconcile_every", 30.0)
        requests_per_window = reader.integer("requests_per_window", 40)
        window = reader.number("window", 20.0)
        engine = read_engine_options(reader)
        reader.done(OPTION_KEYS)
        assert base_url is not None and email is not None
        assert api_key is not None and webhook_token is not None
        return cls(
            base_url.rstrip("/"),
            email,
            api_key,
            webhook_token,
            reconcile_every=reconcile_every,
            requests_per_window=requests_per_window,
            window=window,
            **engine,
        )


def _base_url(reader: OptionReader) -> str | None:
    """``https://<domain>.gorgias.com`` from ``domain``, or ``base_url`` as given."""
    if "base_url" in reader.options:
        if "domain" in reader.options:
            reader.problem("domain", "give either domain or base_url, not both")
            return None
        return reader.url("base_url")
    domain = reader.string("domain")
    if domain is None:
        if "domain" not in reader.options:
            reader.problem("domain", "is required (the <domain> of https://<domain>.gorgias.com)")
        return None
    if not _DOMAIN.match(domain):
        reader.problem(
            "domain", f"must be the <domain> of https://<domain>.gorgias.com, got {domain!r}"
        )
        return None
    return f"https://{domain.lower()}.gorgias.com"
