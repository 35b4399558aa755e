"""The Starlette app of the campaign page: a token on every request, read-only routes.

As Jupyter does, the page is served on 127.0.0.1 and protected by a random token in the URL
it prints: a request with ``?token=T`` gets a cookie, later ones (the page's own polls, its
static files) carry that cookie; any request with neither gets 403.  Nothing here writes to
the store.
"""

from __future__ import annotations

import contextlib
import hmac
import secrets
import socket
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

from . import data
from .snapshot import Snapshots

STATIC = Path(__file__).with_name("static")
COOKIE = "bf_token"
#: The page's data is read this often (by one thread, whatever the number of browsers), and
#: browsers poll as often (static/dashboard.js): shorter is livelier, and costs a count of
#: the whole task table each time.
POLL_MS = 2000


def new_token() -> str:
    """A random token for the page's URL (as Jupyter's: 24 random bytes, hex)."""
    return secrets.token_hex(24)


class _TokenGate:
    """ASGI middleware: 403 unless the request carries the token (query or cookie)."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self.token = token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        given = request.query_params.get("token")
        ok = given is not None and hmac.compare_digest(given, self.token)
        if not ok:
            cookie = request.cookies.get(COOKIE)
            ok = cookie is not None and hmac.compare_digest(cookie, self.token)
        if not ok:
            await PlainTextResponse("403: this page needs the token in the URL that "
                                    "`balsam-futures web` printed", status_code=403)(
                scope, receive, send)
            return
        if given is None:
            await self.app(scope, receive, send)
            return

        async def send_with_cookie(message: dict) -> None:
            if message["type"] == "http.response.start":
                value = f"{COOKIE}={self.token}; Path=/; HttpOnly; SameSite=Strict"
                message.setdefault("headers", []).append((b"set-cookie", value.encode()))
            await send(message)

        await self.app(scope, receive, send_with_cookie)


def create_app(open_store: Callable[[], Any], token: str, site: str | None = None
               ) -> Starlette:
    """The page's app over the store ``open_store()`` returns (opened at the first request,
    closed at shut-down); ``site``: where shell tasks' default working directories are."""
    state: dict[str, Any] = {}

    def store() -> Any:
        if "store" not in state:
            state["store"] = open_store()
        return state["store"]

    def index(request: Request) -> Response:
        return FileResponse(STATIC / "index.html")

    def task_page(request: Request) -> Response:
        return FileResponse(STATIC / "task.html")

    views = Snapshots({"counts": lambda: data.counts(store()),
                       "summary": lambda: data.summary(store())}, POLL_MS / 1000)

    def api_summary(request: Request) -> Response:
        return JSONResponse({**views.get("summary"), "poll_ms": POLL_MS})

    def api_counts(request: Request) -> Response:
        return JSONResponse(views.get("counts"))

    def api_task(request: Request) -> Response:
        try:
            task_id = int(request.path_params["task_id"])
        except ValueError:
            return JSONResponse({"error": "task id must be an integer"}, status_code=400)
        detail = data.task_detail(store(), task_id, site)
        if detail is None:
            return JSONResponse({"error": f"no task {task_id}"}, status_code=404)
        return JSONResponse(detail)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        views.start()  # read before anyone asks: the first page opens at once
        yield
        views.stop()
        if "store" in state:
            state.pop("store").close()

    routes = [
        Route("/", index),
        Route("/task/{task_id}", task_page),
        Route("/api/counts", api_counts),
        Route("/api/summary", api_summary),
        Route("/api/task/{task_id}", api_task),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    return Starlette(routes=routes, middleware=[Middleware(_TokenGate, token=token)],
                     lifespan=lifespan)


def bind(port: int, host: str = "127.0.0.1") -> socket.socket:
    """A listening socket on ``host``:``port`` (0: any free port)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)
    return sock


def serve(app: Starlette, sock: socket.socket) -> None:
    """Serve ``app`` on ``sock`` until interrupted (uvicorn)."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    server.run(sockets=[sock])
