"""The dashboard's aiohttp application: its pages, its JSON API and its event stream.

:func:`make_app` builds it; the application opens what it owns on startup and closes it on
cleanup (``cleanup_ctx``): one :class:`~shared.store.Store` for reads (and the live state's
requests), one :class:`~services.client.Client` for actions, one
:class:`~services.dashboard.live.Live` feed for every page.

Routes (a fixed contract: the pages in ``static/`` are written against it):

* ``GET /``, ``GET /jobs/{id}``, ``GET /static/{name}``: the pages (files of ``static/``);
* ``GET /api/config``, ``/api/jobs``, ``/api/jobs/{id}``, ``/api/jobs/{id}/steps/{step}``,
  ``/api/cluster``: JSON (:mod:`services.dashboard.reads`, :mod:`services.dashboard.live`);
* ``GET /api/events[?job=ID]``: server-sent events (``job``, ``worker``, ``cluster``, and a
  ``: ping`` comment every :data:`KEEPALIVE_S`);
* ``POST /api/jobs/{id}/cancel`` and ``.../resume``: :mod:`services.job_actions`, the same
  decisions and words as ``theodolite cancel`` / ``resume``, behind the token policy of
  :mod:`services.dashboard.access`.

Every API error is JSON ``{"error": ...}``: 400 a bad filter or body, 403 refused, 404 no such
job or step, 409 an action the job cannot have, 413 a body over :data:`MAX_BODY_BYTES`, 503
MongoDB or RabbitMQ away (longer than a read or a publish waits, see :func:`dashboard_settings`),
500 anything else (logged); never a traceback page.
"""

from __future__ import annotations

import json
import logging
import mimetypes
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from services.client import Client
from services.dashboard.access import AccessPolicy
from services.dashboard.live import Live
from services.dashboard.reads import NotFound, Reads, job_query
from services.job_actions import ActionCode, ActionOutcome, cancel_job, resume_job
from shared.distributed_errors import BrokerError, StoreError
from shared.messages import DEFAULT_CANCEL_GRACE_S, StepName
from shared.outages import short, transient
from shared.settings import Settings
from shared.store import Store

STATIC_DIR = Path(__file__).parent / "static"
MAX_BODY_BYTES = 64 * 1024
KEEPALIVE_S = 15.0
"""An event stream with nothing to say sends a comment this often (proxies close idle ones)."""
SHUTDOWN_S = 3.0
"""How long a stopping server waits for requests still running."""
READ_WAIT_S = 5.0
"""A page's read waits this long at most for MongoDB to come back (then 503)."""
PUBLISH_WAIT_S = 10.0
"""An action waits this long at most for RabbitMQ to come back (then 503)."""
_STATIC_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*(\.[A-Za-z0-9_-]+)*$")
_CONTENT_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                  ".mjs": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8",
                  ".json": "application/json", ".svg": "image/svg+xml", ".png": "image/png", ".ico": "image/x-icon",
                  ".map": "application/json", ".txt": "text/plain; charset=utf-8", ".woff2": "font/woff2"}
_STATUS = {ActionCode.SENT: 200, ActionCode.NOTHING_TO_DO: 200, ActionCode.NO_JOB: 404, ActionCode.REFUSED: 409}
log = logging.getLogger("theodolite.dashboard")
Body = TypeVar("Body", bound=BaseModel)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class Opened:
    """What the application opened on startup."""

    reads: Reads
    client: Client
    live: Live


SETTINGS = web.AppKey("settings", Settings)
POLICY = web.AppKey("policy", AccessPolicy)
OPENED = web.AppKey("opened", Opened)


class CancelBody(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    grace_s: float = Field(default=DEFAULT_CANCEL_GRACE_S, ge=0, le=86_400, allow_inf_nan=False)


class ResumeBody(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    from_steps: list[StepName] = Field(default_factory=list, max_length=1000)
    parameters: dict[str, Any] = Field(default_factory=dict, max_length=500)


class Problem(Exception):
    """An API error: its status and what the JSON body says."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


def dashboard_settings(settings: Settings) -> Settings:
    """``settings`` with reads and publishes that wait an outage out briefly: a page gets its
    503 within seconds, not after the minutes a service waits."""
    return settings.model_copy(update={"store_retry_s": min(settings.store_retry_s, READ_WAIT_S),
                                       "publish_timeout_s": min(settings.publish_timeout_s, PUBLISH_WAIT_S)})


def make_app(settings: Settings, policy: AccessPolicy) -> web.Application:
    """The application (its resources are opened when a runner sets it up)."""
    app = web.Application(middlewares=[_errors, _guard], client_max_size=MAX_BODY_BYTES)
    app[SETTINGS], app[POLICY] = settings, policy
    app.cleanup_ctx.append(_resources)
    app.on_shutdown.append(_hang_up)
    app.on_response_prepare.append(_plain_headers)
    app.router.add_get("/", _page("index.html"))
    app.router.add_get("/jobs/{job_id}", _page("job.html"))
    app.router.add_get("/static/{name}", _static)
    app.router.add_get("/api/config", _config)
    app.router.add_get("/api/jobs", _jobs)
    app.router.add_get("/api/jobs/{job_id}", _job)
    app.router.add_get("/api/jobs/{job_id}/steps/{step}", _step)
    app.router.add_get("/api/cluster", _cluster)
    app.router.add_get("/api/events", _events)
    app.router.add_post("/api/jobs/{job_id}/cancel", _cancel)
    app.router.add_post("/api/jobs/{job_id}/resume", _resume)
    return app


async def _resources(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    async with AsyncExitStack() as stack:
        store = await stack.enter_async_context(Store(settings))
        client = await stack.enter_async_context(Client(settings))
        live = await stack.enter_async_context(Live(settings, store))
        app[OPENED] = Opened(Reads(store), client, live)
        yield


async def _hang_up(app: web.Application) -> None:
    opened = app.get(OPENED)
    if opened is not None:
        opened.live.hang_up()


# middlewares ------------------------------------------------------------------------------
def _outage(error: BaseException) -> str | None:
    """What to say about an error that an outage of MongoDB or RabbitMQ explains (else None)."""
    from pymongo.errors import PyMongoError

    if isinstance(error, PyMongoError | StoreError):
        return f"MongoDB is out of reach: {short(error)}"
    if isinstance(error, BrokerError):
        return f"RabbitMQ is out of reach: {error}"
    if transient(error):
        return f"the cluster is out of reach: {short(error)}"
    return None


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    api = request.path.startswith("/api/")
    try:
        return await handler(request)
    except Problem as problem:
        return web.json_response({"error": problem.message}, status=problem.status)
    except web.HTTPException as error:
        if not api or error.status < 400:
            raise
        return web.json_response({"error": error.reason}, status=error.status)
    except Exception as error:  # answered as JSON, never a traceback page
        outage = _outage(error)
        if outage is not None:
            log.warning("%s %s: %s", request.method, request.path, outage)
            return web.json_response({"error": outage}, status=503)
        log.exception("%s %s failed", request.method, request.path)
        return web.json_response({"error": f"internal error ({type(error).__name__}); see the dashboard's log"}, status=500)


@web.middleware
async def _guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Actions: as the access policy says (:mod:`services.dashboard.access`)."""
    headers = request.headers
    refusal = request.app[POLICY].refusal_of(request.method, headers.get("Authorization"), headers.get("Origin"),
                                             request.host)
    if refusal is not None:
        raise Problem(403, refusal)
    return await handler(request)


async def _plain_headers(_: web.Request, response: web.StreamResponse) -> None:
    """No content sniffing, no referrer with job ids to other sites, no framing by them."""
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "same-origin")
    response.headers.setdefault("X-Frame-Options", "SAMEORIGIN")


# pages ------------------------------------------------------------------------------------
def content_type(name: str) -> str:
    suffix = Path(name).suffix.lower()
    return _CONTENT_TYPES.get(suffix) or mimetypes.guess_type(name)[0] or "application/octet-stream"


def static_file(name: str) -> Path:
    """The file ``name`` of ``static/`` (a plain name: no folder, no ``..``); 404 otherwise."""
    if not _STATIC_NAME.match(name):
        raise web.HTTPNotFound()
    path = STATIC_DIR / name
    if not path.is_file():
        raise web.HTTPNotFound()
    return path


def _file_response(name: str) -> web.FileResponse:
    return web.FileResponse(static_file(name), headers={"Content-Type": content_type(name), "Cache-Control": "no-cache"})


def _page(name: str) -> Handler:
    async def page(_: web.Request) -> web.StreamResponse:
        return _file_response(name)
    return page


async def _static(request: web.Request) -> web.StreamResponse:
    return _file_response(request.match_info["name"])


# the API ----------------------------------------------------------------------------------
def _json(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, headers={"Cache-Control": "no-store"})


async def _config(request: web.Request) -> web.Response:
    policy = request.app[POLICY]
    return _json({"namespace": request.app[SETTINGS].namespace, "token_required": policy.token_required,
                  "host": policy.host})


async def _jobs(request: web.Request) -> web.Response:
    query = request.query
    now = time.time()
    try:
        wanted = job_query(query.getall("state", []), query.getall("label", []), query.get("since"), query.get("limit"), now)
    except ValueError as problem:
        raise Problem(400, str(problem)) from None
    return _json({"jobs": await request.app[OPENED].reads.jobs(wanted, now)})


async def _job(request: web.Request) -> web.Response:
    try:
        opened, job_id = request.app[OPENED], request.match_info["job_id"]
        return _json(await opened.reads.job(job_id, time.time(), opened.live.state.running(job_id)))
    except NotFound as missing:
        raise Problem(404, str(missing)) from None


async def _step(request: web.Request) -> web.Response:
    try:
        opened, job_id, step = request.app[OPENED], request.match_info["job_id"], request.match_info["step"]
        return _json(await opened.reads.step(job_id, step, time.time(), opened.live.state.running(job_id).get(step)))
    except NotFound as missing:
        raise Problem(404, str(missing)) from None


async def _cluster(request: web.Request) -> web.Response:
    return _json(request.app[OPENED].live.screen(time.time()))


async def _events(request: web.Request) -> web.StreamResponse:
    live = request.app[OPENED].live
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store",
                                           "X-Accel-Buffering": "no"})
    with live.subscribe(request.query.get("job") or None) as subscriber:
        try:
            await response.prepare(request)
            await response.write(b": connected\n\n")
            while True:
                try:
                    message = await subscriber.next(KEEPALIVE_S)
                except TimeoutError:
                    await response.write(b": ping\n\n")
                    continue
                if message is None:  # dropped (too slow) or the server is stopping
                    break
                await response.write(message.encode())
        except ConnectionError:  # the page went away
            pass
    return response


async def _body(request: web.Request, model: type[Body]) -> Body:
    """The request's JSON body as ``model`` (an empty body: the defaults)."""
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:  # over client_max_size
        raise Problem(413, f"the body is larger than {MAX_BODY_BYTES} bytes") from None
    try:
        data = json.loads(raw) if raw.strip() else {}
    except ValueError as error:
        raise Problem(400, f"the body is not JSON: {error}") from None
    try:
        return model.model_validate(data)
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in error.errors()[:5])
        raise Problem(400, f"bad body: {problems}") from None


def _outcome(outcome: ActionOutcome) -> web.Response:
    data: dict[str, Any] = {"ok": outcome.ok, "message": outcome.message, "code": outcome.code.value}
    if outcome.run is not None:
        data["run"] = outcome.run
    return _json(data, _STATUS[outcome.code])


async def _cancel(request: web.Request) -> web.Response:
    body = await _body(request, CancelBody)
    return _outcome(await cancel_job(request.app[OPENED].client, request.match_info["job_id"], body.grace_s))


async def _resume(request: web.Request) -> web.Response:
    body = await _body(request, ResumeBody)
    return _outcome(await resume_job(request.app[OPENED].client, request.match_info["job_id"], body.from_steps,
                                     body.parameters))
