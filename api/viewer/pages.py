"""The run viewer: two HTML pages and their static files.

The pages hold no data: they call the REST API and the WebSocket like any other
client, with the caller's credential, so they need none to be served.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

STATIC_DIR = Path(__file__).resolve().parent / "static"
STATIC_URL = "/static"

router = APIRouter(tags=["Run viewer"], include_in_schema=False)


def _page(name: str) -> FileResponse:
    # no-cache: a browser revalidates (ETag), so a new release is seen at once.
    return FileResponse(
        STATIC_DIR / name, media_type="text/html", headers={"Cache-Control": "no-cache"}
    )


@router.get("/runs")
async def runs_page() -> FileResponse:
    """Executions newest first, with filters and paging."""
    return _page("runs.html")


@router.get("/runs/{execution_id}")
async def run_page(execution_id: str) -> FileResponse:
    """One execution. Any id gets the page; the page says when the run does not exist."""
    return _page("run.html")


def install_viewer(app: FastAPI) -> None:
    app.mount(STATIC_URL, StaticFiles(directory=STATIC_DIR), name="static")
    app.include_router(router)
