"""The files of ``transport/web/``: Starlette's ``StaticFiles``, held to plain names.

Only plain names inside the folder are served (letters, digits, ``_``, ``.`` and ``-``, in
subfolders too, never a dot-file); anything else (``..``, absolute paths, dot-files, links
out of the folder, folders) is ``404 not_found``. Every file answers with ``ETag`` and
``Last-Modified`` and ``Cache-Control: no-cache``: a browser keeps its copy and asks each
time whether it is still current (``304 Not Modified``), so a new release's widget is
picked up at once even though its file names do not change.
"""

from __future__ import annotations

import mimetypes
import os
import re
from pathlib import Path

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.responses import FileResponse, Response
from starlette.staticfiles import NotModifiedResponse, StaticFiles
from starlette.types import Scope

WEB_DIR = Path(__file__).resolve().parent.parent.parent / "web"

CACHE_CONTROL = "no-cache"

# Plain names in web/ (and its subfolders), no dot-files.
SAFE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]*(/[A-Za-z0-9_][A-Za-z0-9._-]*)*$")

CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".txt": "text/plain; charset=utf-8",
    ".map": "application/json",
    ".woff2": "font/woff2",
}


def content_type(path: str | os.PathLike[str]) -> str:
    name = os.fspath(path)
    known = CONTENT_TYPES.get(os.path.splitext(name)[1].lower())
    return known or mimetypes.guess_type(name)[0] or "application/octet-stream"


def _missing(name: str) -> HTTPException:
    return HTTPException(404, f"No file named {name!r}.")


class WebFiles(StaticFiles):
    """``StaticFiles`` for one folder, serving plain names only (see the module)."""

    def __init__(self, directory: Path = WEB_DIR) -> None:
        super().__init__(directory=directory, follow_symlink=False)

    def get_path(self, scope: Scope) -> str:
        # The name as asked, before any normalisation: "a/../b.js" is not a plain name.
        path: str = scope["path"]
        root: str = scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root) :]
        name = path.removeprefix("/")
        if not SAFE_NAME.match(name):
            raise _missing(name)
        return name

    async def get_response(self, path: str, scope: Scope) -> Response:
        if scope["method"] not in ("GET", "HEAD"):
            raise HTTPException(405, headers={"allow": "GET"})
        try:
            return await super().get_response(path, scope)
        except HTTPException as exc:
            if exc.status_code == 404:
                raise _missing(path) from None
            raise

    def file_response(
        self,
        full_path: str | os.PathLike[str],
        stat_result: os.stat_result,
        scope: Scope,
        status_code: int = 200,
    ) -> Response:
        response = FileResponse(
            full_path,
            status_code=status_code,
            headers={"cache-control": CACHE_CONTROL},
            media_type=content_type(full_path),
            stat_result=stat_result,
        )
        if self.is_not_modified(response.headers, Headers(scope=scope)):
            return NotModifiedResponse(response.headers)
        return response

    async def file(self, name: str, scope: Scope) -> Response:
        """The answer for one file of the folder by its plain name (a page's own route)."""
        return await self.get_response(name, scope)
