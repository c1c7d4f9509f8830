"""The embedding example in docs/ runs, so the documentation cannot rot."""

from __future__ import annotations

import runpy
from pathlib import Path

from actors import SESSION_END

EXAMPLE = Path(__file__).resolve().parent.parent / "docs" / "examples" / "embed.py"


async def test_the_embedding_example_runs_a_whole_session() -> None:
    namespace = runpy.run_path(str(EXAMPLE))
    heard = await namespace["main"]()
    # The bot heard the user before and after the session, and the end of the session, but
    # nothing said while a human had the conversation.
    assert heard == ["help", SESSION_END, "thanks"]
