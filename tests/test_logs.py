"""Structured logs: one JSON object per line, or readable text, with the extra fields."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from transport.logs import configure_logging


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    buffer = io.StringIO()
    yield buffer
    root = logging.getLogger()
    for handler in list(root.handlers):
        if handler.get_name() == "switchover":
            root.removeHandler(handler)


def test_json_logs_are_one_object_per_line_with_extra_fields(stream: io.StringIO) -> None:
    configure_logging("json", "info", stream)
    log = logging.getLogger("switchover.test")
    log.info("user said %s", "hi", extra={"conversation_id": "c1", "seq": 3})
    log.debug("not shown at info")
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("it failed\non two lines")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    first, second = (json.loads(line) for line in lines)
    assert first["message"] == "user said hi"
    assert (first["level"], first["logger"]) == ("info", "switchover.test")
    assert (first["conversation_id"], first["seq"]) == ("c1", 3)
    assert first["ts"].endswith("Z") and "T" in first["ts"]
    assert second["level"] == "error" and second["message"] == "it failed\non two lines"
    assert "ValueError: boom" in second["exc_info"]


def test_text_logs_are_readable_and_keep_extra_fields(stream: io.StringIO) -> None:
    configure_logging("text", "debug", stream)
    logging.getLogger("switchover.test").debug("hello", extra={"conversation_id": "c9"})
    line = stream.getvalue().strip()
    assert "DEBUG" in line and "switchover.test: hello [conversation_id=c9]" in line


def test_configuring_twice_replaces_the_handler(stream: io.StringIO) -> None:
    configure_logging("text", "info", io.StringIO())
    configure_logging("json", "info", stream)
    logging.getLogger("switchover.test").warning("once")
    assert len(stream.getvalue().splitlines()) == 1
    with pytest.raises(ValueError, match="log format must be one of text, json"):
        configure_logging("xml")
