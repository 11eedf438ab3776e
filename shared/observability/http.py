"""The services' small HTTP server: ``/metrics``, ``/healthz`` and ``/readyz``.

* ``GET /metrics``: the service's registry in Prometheus' text format (``generate_latest``).
* ``GET /healthz``: 200 ``{"alive": true}`` while the process and its event loop run
  (liveness: answered on the service's own loop, so a wedged loop does not answer).
* ``GET /readyz``: 200 when ready, else 503; the body is the :class:`Readiness` as JSON:
  ``{"ready", "rabbitmq", "mongodb", "consuming"}`` and, for planners, ``"lease": "held" |
  "standby"`` (see :mod:`shared.observability.health`).

Port and address come from ``THEODOLITE_METRICS_PORT`` (``--metrics-port``; 0, the default,
serves nothing) and ``THEODOLITE_METRICS_HOST`` (default ``127.0.0.1``: a workstation does not
publish its services' internals on the network; containers set ``0.0.0.0`` and port 9100).

**Why aiohttp.** The server runs inside the service's own event loop, beside its consumers:
aiohttp's ``AppRunner``/``TCPSite`` is made for exactly that (started and cleaned up by the
caller, no signal handlers installed, no thread), and aiohttp shares its lower layers
(``yarl``, ``multidict``) with aio-pika, which the services use already. Starlette needs an ASGI
server besides (uvicorn), whose ``Server.serve`` wants to own the process's signals; and
``prometheus_client``'s own ``start_http_server`` runs a thread of its own that could not
answer readiness from the loop's state without locks.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from shared.distributed_errors import MetricsPortUnavailable
from shared.observability.health import Readiness
from shared.resource import AsyncResource

log = logging.getLogger("theodolite.http")


class HealthServer(AsyncResource):
    """Owns the HTTP server of one service (``port`` 0: any free port, see :attr:`port`)."""

    def __init__(self, registry: CollectorRegistry, readiness: Callable[[], Readiness], *, host: str = "127.0.0.1",
                 port: int = 0, name: str = "service") -> None:
        self.registry = registry
        self.readiness = readiness
        self.host = host
        self.port = port
        self.name = name
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "", "::") else self.host
        return f"http://{host}:{self.port}"

    async def open(self) -> None:
        if self._runner is not None:
            return
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port)
        try:
            await site.start()
        except OSError as error:
            await runner.cleanup()
            raise MetricsPortUnavailable(self.host, self.port, error.strerror or str(error)) from None
        self._runner = runner
        addresses = runner.addresses
        if addresses and self.port == 0:
            self.port = int(addresses[0][1])
        log.info("%s: metrics on %s/metrics, health on /healthz and /readyz", self.name, self.url)

    async def close(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def _metrics(self, _: web.Request) -> web.Response:
        return web.Response(body=generate_latest(self.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _healthz(self, _: web.Request) -> web.Response:
        return web.json_response({"alive": True})

    async def _readyz(self, _: web.Request) -> web.Response:
        readiness = self.readiness()
        return web.json_response(readiness.as_json(), status=200 if readiness.ready else 503)


class NoServer(AsyncResource):
    """What a service opens instead when its metrics port is 0 (nothing served)."""

    url = ""

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None


def metrics_server(port: int, host: str, registry: CollectorRegistry, readiness: Callable[[], Readiness], *,
                   name: str) -> HealthServer | NoServer:
    """The server of a service configured with ``THEODOLITE_METRICS_PORT`` = ``port`` (0: none)."""
    if port == 0:
        return NoServer()
    return HealthServer(registry, readiness, host=host, port=port, name=name)
