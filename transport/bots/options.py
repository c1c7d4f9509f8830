"""Reading an adapter's options (the ``[bots.<id>.options]`` table) with errors that name the
bad key, and the retry and breaker options every remote adapter shares."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from transport.bots.resilience import CircuitBreaker, Resilience, RetryPolicy
from transport.errors import ConfigError

RESILIENCE_KEYS = frozenset(
    {"timeout", "attempts", "backoff", "max_backoff", "breaker_threshold", "breaker_cooldown"}
)


class OptionReader:
    """Takes typed values out of one bot's options and collects every problem, so a config
    is fixed in one pass; :meth:`done` raises them all as a :class:`ConfigError`."""

    def __init__(
        self,
        bot_id: str,
        options: Mapping[str, Any],
        *,
        table: str = "options",
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.bot_id = bot_id
        self.options = options
        self.table = table
        self.environ = os.environ if environ is None else environ
        self.problems: list[str] = []

    def key(self, name: str) -> str:
        return f"bots.{self.bot_id}.{self.table}.{name}"

    def problem(self, name: str, message: str) -> None:
        self.problems.append(f"{self.key(name)}: {message}")

    def string(self, name: str, *, required: bool = False) -> str | None:
        value = self.options.get(name)
        if value is None:
            if required:
                self.problem(name, "is required")
            return None
        if not isinstance(value, str) or not value.strip():
            self.problem(name, f"must be a non-empty string, got {value!r}")
            return None
        return value

    def secret(self, name: str, *, min_length: int) -> str | None:
        """A required secret, given as ``name`` or, to keep it out of the file, as
        ``<name>_env``: the name of the environment variable that holds it."""
        from_env = self.string(f"{name}_env")
        if from_env is not None:
            if name in self.options:
                self.problem(name, f"give either {name} or {name}_env, not both")
                return None
            value = self.environ.get(from_env)
            if not value:
                self.problem(f"{name}_env", f"the environment variable {from_env} is not set")
                return None
        else:
            value = self.string(name)
            if value is None:
                if name not in self.options:
                    self.problem(name, f"is required (or {name}_env, naming a variable)")
                return None
        if len(value) < min_length:
            self.problem(name, f"must be at least {min_length} characters long")
            return None
        return value

    def url(self, name: str) -> str | None:
        value = self.string(name, required=True)
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            self.problem(name, f"must be an http:// or https:// URL, got {value!r}")
            return None
        return value

    def number(self, name: str, default: float) -> float:
        value = self.options.get(name, default)
        if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
            self.problem(name, f"must be a positive number, got {value!r}")
            return default
        return float(value)

    def integer(self, name: str, default: int) -> int:
        value = self.options.get(name, default)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            self.problem(name, f"must be a whole number of at least 1, got {value!r}")
            return default
        return value

    def resilience(self) -> Resilience:
        policy = RetryPolicy(
            attempts=self.integer("attempts", 3),
            backoff=self.number("backoff", 0.2),
            max_backoff=self.number("max_backoff", 2.0),
            timeout=self.number("timeout", 10.0),
        )
        breaker = CircuitBreaker(
            self.integer("breaker_threshold", 5), self.number("breaker_cooldown", 30.0)
        )
        return Resilience(self.bot_id, policy, breaker)

    def done(self, known: frozenset[str]) -> None:
        for name in self.options:
            if name not in known:
                self.problems.append(
                    f"{self.key(name)}: unknown option; known: {', '.join(sorted(known))}"
                )
        if self.problems:
            raise ConfigError(self.problems)
