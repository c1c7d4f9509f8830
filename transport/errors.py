"""The one error a wrong configuration raises, wherever the mistake is found: reading the
file, or a bot's adapter checking its options."""

from __future__ import annotations


class ConfigError(Exception):
    """The configuration is wrong. ``problems`` lists each one, naming its key."""

    def __init__(self, problems: list[str] | str) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("; ".join(self.problems))
