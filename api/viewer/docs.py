"""``/docs`` (Swagger UI) and ``/redoc`` from the copies vendored under
``static/vendor`` instead of FastAPI's default CDN, so they work offline.

A Content-Security-Policy keeps the pages on Keel's own origin: ReDoc's bundle would
otherwise fetch its footer logo from its vendor's CDN (that link is hidden too).
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse

from api.viewer.pages import STATIC_URL

VENDOR = f"{STATIC_URL}/vendor"
FAVICON = f"{VENDOR}/swagger-ui/favicon-32x32.png"
SAME_ORIGIN_ONLY = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; "
    "style-src 'self' 'unsafe-inline'; script-src 'self' 'unsafe-inline'; "
    "worker-src 'self' blob:; connect-src 'self'",
}
HIDE_REDOC_CREDIT = '<style>a[href^="https://redocly.com/redoc"] { display: none; }</style>'


def _own_origin(page: HTMLResponse, extra_head: str = "") -> HTMLResponse:
    html = bytes(page.body).decode()
    return HTMLResponse(
        html.replace("</head>", f"{extra_head}</head>", 1), headers=SAME_ORIGIN_ONLY
    )


def install_docs(app: FastAPI) -> None:
    """Call on an app made with ``docs_url=None, redoc_url=None``."""
    openapi_url = app.openapi_url or "/openapi.json"

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui() -> HTMLResponse:
        return _own_origin(
            get_swagger_ui_html(
                openapi_url=openapi_url,
                title=f"{app.title} - Swagger UI",
                swagger_js_url=f"{VENDOR}/swagger-ui/swagger-ui-bundle.js",
                swagger_css_url=f"{VENDOR}/swagger-ui/swagger-ui.css",
                swagger_favicon_url=FAVICON,
            )
        )

    @app.get("/redoc", include_in_schema=False)
    async def redoc() -> HTMLResponse:
        return _own_origin(
            get_redoc_html(
                openapi_url=openapi_url,
                title=f"{app.title} - ReDoc",
                redoc_js_url=f"{VENDOR}/redoc/redoc.standalone.js",
                redoc_favicon_url=FAVICON,
                with_google_fonts=False,
            ),
            HIDE_REDOC_CREDIT,
        )
