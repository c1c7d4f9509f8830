"""The pictures the docs show exist, and every picture kept under docs/images/ is shown."""

from __future__ import annotations

import re
from pathlib import Path

DOCS = Path(__file__).resolve().parent.parent / "docs"
IMAGE = re.compile(r"!\[[^\]]*\]\((images/[^)\s]+)\)")


def shown() -> set[str]:
    return {
        found
        for page in DOCS.glob("*.md")
        for found in IMAGE.findall(page.read_text(encoding="utf-8"))
    }


def test_every_picture_the_docs_show_exists() -> None:
    missing = sorted(name for name in shown() if not (DOCS / name).is_file())
    assert not missing, f"pictures the docs show but docs/ lacks: {missing}"


def test_every_kept_picture_is_shown_somewhere() -> None:
    kept = {f"images/{path.name}" for path in (DOCS / "images").glob("*.png")}
    assert kept, "docs/images/ holds no pictures (run .venv/bin/python -m tests.screenshots)"
    assert kept <= shown(), f"pictures no page shows: {sorted(kept - shown())}"
