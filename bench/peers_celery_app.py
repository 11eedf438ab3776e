"""Celery application for the peer benchmark (imported by the client and by ``celery -A`` workers).

Configured from the environment so the benchmark driver and the worker processes it starts agree:

- ``BENCH_CELERY_BROKER``  AMQP URL (default guest@127.0.0.1:5672)
- ``BENCH_CELERY_BACKEND`` ``rpc://`` or a ``mongodb://host:port/dbname`` URL
- ``BENCH_CELERY_QUEUE``   queue (and exchange/routing key) name unique to the run

Settings are Celery's defaults except those listed in ``app.conf.update`` below (isolation on a
shared broker and start-up noise; none of them is a throughput trick).
"""

from __future__ import annotations

import os

from celery import Celery

DEFAULT_BROKER = "amqp://guest:guest@127.0.0.1:5672//"


def make_app(broker: str, backend: str, queue: str) -> Celery:
    """A Celery app on ``broker`` whose tasks go to ``queue`` and whose results go to ``backend``."""
    app = Celery("bench_peers", broker=broker, backend=backend, set_as_current=False)
    app.conf.update(
        task_default_queue=queue,
        task_default_exchange=queue,
        task_default_routing_key=queue,
        broker_connection_retry_on_startup=True,
        # No broadcast/pidbox queues or events on a broker shared with other users.
        worker_enable_remote_control=False,
        worker_send_task_events=False,
        task_send_sent_event=False,
        # Results are read once by the benchmark; no periodic clean-up task.
        result_expires=None,
    )
    if backend.startswith("mongodb"):
        app.conf.mongodb_backend_settings = {"taskmeta_collection": "celery_taskmeta"}

    @app.task(name="bench.noop", shared=False)
    def noop(*args, **kwargs):
        """The no-op step: accepts (and ignores) the previous step's result in a chain; returns None."""

    return app


# The app the ``celery -A bench.peers_celery_app worker`` processes load.
app = make_app(
    os.environ.get("BENCH_CELERY_BROKER", DEFAULT_BROKER),
    os.environ.get("BENCH_CELERY_BACKEND", "rpc://"),
    os.environ.get("BENCH_CELERY_QUEUE", "bench.celery"),
)
