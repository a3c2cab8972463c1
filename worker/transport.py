"""The broker transport every gateway process uses: kombu's Redis transport with one client per pool.

kombu builds a new Redis client object (~0.1 ms) for every publish, ack and binding lookup. A redis-py
client is thread-safe (it only borrows connections from the pool), so one client per connection pool
serves them all; a new pool after a reconnect gets a new client.

The transport is registered under kombu's own ``redis`` (and ``rediss``) names (``use_one_client_transport``) rather
than passed as a class: the broker URL stays ``redis://...``, so tools that read it (Flower's broker
page and ``/api/queues/length``) recognise a Redis broker, and the app's configuration stays plain
JSON that workers can send when Flower inspects them.
"""

from __future__ import annotations

from typing import Any

import redis
from kombu import transport as kombu_transport
from kombu.transport import redis as redis_transport

TRANSPORT_NAMES = ("redis", "rediss")  # kombu's names for Redis, plain and over TLS


class OneClientChannel(redis_transport.Channel):
    """A channel that hands out one shared synchronous client per connection pool."""

    _shared_client: Any = None

    def _create_client(self, asynchronous: bool = False) -> Any:
        if getattr(self.connection, "client", None) is None:
            # The connection is closing (Redis went away): kombu may still try to restore unacked
            # messages through it. Say "connection lost", which the worker recovers from, rather
            # than fail on the missing client, which kills the worker.
            raise redis.exceptions.ConnectionError("the broker connection is closed")
        if asynchronous:
            return super()._create_client(asynchronous=True)
        client = self._shared_client
        if client is None or client.connection_pool is not self.pool:
            client = self._shared_client = super()._create_client()
        return client


class OneClientTransport(redis_transport.Transport):
    Channel = OneClientChannel


def use_one_client_transport() -> None:
    """Make ``redis://`` broker URLs in this process use ``OneClientTransport`` (idempotent)."""
    for name in TRANSPORT_NAMES:
        kombu_transport.TRANSPORT_ALIASES[name] = f"{__name__}:{OneClientTransport.__name__}"
