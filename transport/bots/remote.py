"""What every bot reached over HTTP shares: its retries and circuit breaker
(:class:`Resilience`), the pooled client it posts through, and closing that client when the
bot made it itself. The CSML and webhook adapters are remote bots."""

from __future__ import annotations

from typing import Any

import httpx

from transport.bots.resilience import Resilience, check_status, make_http_client


class RemoteBot:
    """A bot called over HTTP.

    ``http`` is the pooled client to use (shared by the server's bots); without one the bot
    makes its own and :meth:`aclose` closes it. ``resilience`` defaults to the default
    retries and breaker of ``bot_id``.
    """

    def __init__(
        self,
        bot_id: str,
        *,
        http: httpx.AsyncClient | None = None,
        resilience: Resilience | None = None,
    ) -> None:
        self.bot_id = bot_id
        self.resilience = resilience or Resilience(bot_id)
        self._owns_http = http is None
        self.http = http or make_http_client(timeout=self.resilience.policy.timeout)

    async def _post(
        self,
        url: str,
        headers: dict[str, str],
        *,
        json: Any = None,
        content: bytes | None = None,
    ) -> httpx.Response:
        """One attempt: POST ``json`` (or the raw ``content``) to ``url`` within the retry
        policy's timeout. Raises the :class:`~transport.bots.resilience.BotDeliveryError`
        of a status that is not a success (see
        :func:`~transport.bots.resilience.check_status`)."""
        response = await self.http.post(
            url, json=json, content=content, headers=headers, timeout=self.resilience.policy.timeout
        )
        check_status(response)
        return response

    async def aclose(self) -> None:
        if self._owns_http:
            await self.http.aclose()


__all__ = ["RemoteBot"]
