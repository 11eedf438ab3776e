"""``theodolite dashboard [--host 127.0.0.1] [--port 8765]``: the cluster in a web browser.

Finds the cluster as the other commands do (:func:`services.distributed_cli._settings`),
checks the token policy before anything is opened (:mod:`services.dashboard.access`: an
address other machines can reach needs ``THEODOLITE_DASHBOARD_TOKEN``), opens MongoDB and
RabbitMQ (out of reach: one ``error:`` line, exit 1), then serves the application of
:mod:`services.dashboard.app` until SIGINT or SIGTERM, which stop it cleanly (open event
streams are ended, not waited for). Once it listens it says where on stderr:
``theodolite dashboard: http://HOST:PORT/`` (``--port 0``: a free port, named there).
Registered by :mod:`services.cli`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
from typing import TYPE_CHECKING

import click

from services.distributed_cli import _settings
from services.job_input import EXIT_FAILED, EXIT_OK
from shared.background import cancel_and_wait

if TYPE_CHECKING:  # the command's modules are imported when it runs (theodolite starts fast)
    from aiohttp import web

    from services.dashboard.access import AccessPolicy
    from shared.settings import Settings

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765


def url_of(host: str, port: int) -> str:
    """``http://HOST:PORT/`` (an IPv6 address in brackets)."""
    shown = f"[{host}]" if ":" in host and not host.startswith("[") else host
    return f"http://{shown}:{port}/"


async def _start(runner: web.AppRunner, host: str, port: int) -> int:
    """Open the application's resources and listen; the port it listens on."""
    from aiohttp import web

    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    addresses = runner.addresses
    return int(addresses[0][1]) if addresses and port == 0 else port


async def serve(settings: Settings, policy: AccessPolicy, port: int) -> int:
    """Serve the dashboard until SIGINT or SIGTERM; the exit code."""
    from aiohttp import web
    from pymongo.errors import PyMongoError

    from services.dashboard.app import SHUTDOWN_S, make_app
    from shared.distributed_errors import DistributedError
    from shared.outages import short

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):  # not the main thread
            loop.add_signal_handler(sig, stop.set)
    runner = web.AppRunner(make_app(settings, policy), access_log=None, handle_signals=False, shutdown_timeout=SHUTDOWN_S)
    starting = asyncio.ensure_future(_start(runner, policy.host, port))
    stopping = asyncio.ensure_future(stop.wait())
    try:
        # a signal stops it at any moment, connecting included (a RabbitMQ that is down is
        # waited for, which must not make the command deaf to Ctrl-C)
        await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if not starting.done():
            await cancel_and_wait(starting)
            return EXIT_OK
        listening = starting.result()
        click.echo(f"theodolite dashboard: {url_of(policy.host, listening)}", err=True)
        await stopping
        return EXIT_OK
    except DistributedError as error:
        click.echo(f"error: {error}", err=True)
    except PyMongoError as error:
        click.echo(f"error: MongoDB: {short(error)}", err=True)
    except OSError as error:
        click.echo(f"error: cannot listen on {policy.host}:{port}: {error.strerror or error}", err=True)
    finally:
        stopping.cancel()
        await runner.cleanup()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.remove_signal_handler(sig)
    return EXIT_FAILED


@click.command(name="dashboard")
@click.option("--host", default=DEFAULT_HOST, show_default=True,
              help="Address to listen on. Any but a loopback one needs THEODOLITE_DASHBOARD_TOKEN set; actions "
                   "(cancel, resume) then need it as 'Authorization: Bearer <token>'.")
@click.option("--port", type=click.IntRange(0, 65535), default=DEFAULT_PORT, show_default=True,
              help="Port to listen on (0: a free one, printed when listening).")
def dashboard_command(host: str, port: int) -> None:
    """Serve a web dashboard of the cluster: its jobs (filters as `theodolite jobs`), each job's
    graph and steps with their logs, tracebacks and metrics, its workers and device queues, live
    from its events; cancel and resume from the page. Stops on Ctrl-C or SIGTERM.

    Exit 0 stopped, 1 MongoDB or RabbitMQ out of reach, the port taken, or a non-loopback
    --host without THEODOLITE_DASHBOARD_TOKEN."""
    from services.dashboard.access import TOKEN_VARIABLE, AccessError, policy_for
    from services.dashboard.app import dashboard_settings

    try:
        policy = policy_for(host, os.environ.get(TOKEN_VARIABLE))
    except AccessError as refusal:
        click.echo(f"error: {refusal}", err=True)
        sys.exit(EXIT_FAILED)
    settings = dashboard_settings(_settings())
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    sys.exit(asyncio.run(serve(settings, policy, port)))


COMMANDS = [dashboard_command]
