"""RabbitMQ transport: topology and the connection owner."""

from shared.transport.broker import Broker, Outgoing
from shared.transport.topology import declare_device_queue, work_queue_arguments

__all__ = ["Broker", "Outgoing", "declare_device_queue", "work_queue_arguments"]
