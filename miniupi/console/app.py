"""The console's web app (Starlette): the page, its live feed, and the few things it may do.

Routes: `/` the page (or the sign-in page), `/api/feed` the server-sent
events of feed.py, `POST /api/nodes/NAME/ACTION` to stop, start or restart
a program, `POST /api/audit` to run the audit, `/static/` the scripts,
styles and the vendored uPlot. Every route but the static files and the
sign-in page needs the console key (access.py); the POSTs need a change's
proof as well. No page may frame the console and no script but its own runs
in it (the headers below), so no other site can click its buttons.
"""
from __future__ import annotations

import asyncio
import contextlib
import html
from collections.abc import AsyncIterator
from importlib import resources
from typing import Any

from sse_starlette import EventSourceResponse
from starlette.applications import Starlette
from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from miniupi.config import CONSOLE, ClusterConfig
from miniupi.console.access import COOKIE, Access
from miniupi.console.audit import AuditBusy, Auditor
from miniupi.console.feed import Feed
from miniupi.ops.supervision import SupervisionError, UnknownNode, program_names

STATIC = resources.files("miniupi.console") / "static"
ACTIONS = ("stop", "start", "restart")
HEADERS = {
    "content-security-policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; "
                               "base-uri 'none'; form-action 'self'; object-src 'none'",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",  # the sign-in URL carries the key: never pass it on
    "cache-control": "no-store",
}
PING_S = 15  # an SSE comment this often keeps proxies and the browser from closing an idle feed


class _Guard:
    """Refuses a request for another host name, and puts the security headers on every answer."""

    def __init__(self, app: ASGIApp, access: Access) -> None:
        self.app, self.access = app, access

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if not self.access.right_host(Request(scope)):
            await PlainTextResponse("this console answers only to its own host name", 421)(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message).update(HEADERS)
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _page(name: str, **values: str) -> str:
    text = (STATIC / name).read_text()
    for key, value in values.items():
        text = text.replace("{{" + key + "}}", html.escape(value))
    return text


def create_app(cluster: ClusterConfig, access: Access) -> Starlette:
    """The console of `cluster`, answering pages that hold `access`'s key."""
    feed = Feed(cluster)
    auditor = Auditor(cluster)
    busy: set[str] = set()  # programs a control is under way for
    controllable = [name for name in program_names(cluster) if name != CONSOLE]

    async def index(request: Request) -> Response:
        token = request.query_params.get("token")
        if token is not None:
            if not access.is_key(token):
                return HTMLResponse(_page("signin.html", message="That key is not this console's."), 403)
            # Sign in, and leave the key out of the address bar and the history.
            response = RedirectResponse("/", 303)
            response.set_cookie(COOKIE, access.cookie_value, httponly=True, samesite="strict", path="/")
            return response
        if not access.may_read(request):
            return HTMLResponse(_page("signin.html", message=""), 401)
        return HTMLResponse(_page("index.html", csrf=access.csrf_token, cluster=cluster.name))

    async def events(request: Request) -> Response:
        if not access.may_read(request):
            return JSONResponse({"error": "sign in first"}, 401)

        async def stream() -> AsyncIterator[dict[str, str]]:
            async for name, data in feed.events():
                yield {"event": name, "data": data}
        return EventSourceResponse(stream(), ping=PING_S)

    async def control(request: Request) -> Response:
        refused = _refused(request)
        if refused is not None:
            return refused
        name, action = request.path_params["name"], request.path_params["action"]
        if action not in ACTIONS:
            return JSONResponse({"error": f"no action {action!r} (one of {', '.join(ACTIONS)})"}, 404)
        if name not in controllable:
            known = ", ".join(controllable)
            return JSONResponse({"error": f"no program {name!r} to control here (known: {known})"}, 404)
        if name in busy:
            return JSONResponse({"error": f"{name}: another stop, start or restart is under way"}, 409)
        busy.add(name)
        try:
            await asyncio.to_thread(feed.supervisor.control, action, name)
        except UnknownNode as e:
            return JSONResponse({"error": str(e)}, 404)
        except SupervisionError as e:
            return JSONResponse({"error": str(e)}, 409)
        finally:
            busy.discard(name)
            feed.poke()
        return JSONResponse({"message": f"{name}: {action} done"})

    async def audit(request: Request) -> Response:
        refused = _refused(request)
        if refused is not None:
            return refused
        try:
            return JSONResponse(await auditor.run())
        except AuditBusy as e:
            return JSONResponse({"error": str(e)}, 409)

    def _refused(request: Request) -> Response | None:
        why = access.may_change(request)
        if why is None:
            return None
        return JSONResponse({"error": why}, 401 if not access.may_read(request) else 403)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        task = asyncio.create_task(feed.run())
        try:
            yield {}
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    app = Starlette(routes=[
        Route("/", index),
        Route("/api/feed", events),
        Route("/api/nodes/{name}/{action}", control, methods=["POST"]),
        Route("/api/audit", audit, methods=["POST"]),
        Mount("/static", StaticFiles(directory=str(STATIC)), name="static"),
    ], lifespan=lifespan)
    app.add_middleware(_Guard, access=access)
    return app
