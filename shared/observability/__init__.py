"""What the services tell operators: Prometheus metrics, liveness and readiness over HTTP.

* :mod:`shared.observability.reasons`: the bounded reasons of refused and dead-lettered messages;
* :mod:`shared.observability.metrics`: each service's metrics, in a registry of its own;
* :mod:`shared.observability.health`: readiness (RabbitMQ, MongoDB, consuming, the planner lease);
* :mod:`shared.observability.http`: the server of ``/metrics``, ``/healthz`` and ``/readyz``.

Nothing is imported here: :mod:`shared.transport.settle` needs only the reasons.
"""
