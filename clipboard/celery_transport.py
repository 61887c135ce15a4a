"""Kombu's redis transport as jarvis's broker connections use it, bot and workers alike
(``celery_app.build`` names it as ``broker_transport`` for a redis or rediss URL).

Two things differ from kombu's own, and a channel of this transport does both:

* **Unacknowledged steps stay put when the connection drops.** Kombu puts a channel's
  unacknowledged messages back on their queue as it closes: with a broker restart,
  every step in flight would be handed to a second worker while the first still ran
  it (and kombu 5.7 crashes the worker trying). ``PatientQoS`` leaves them where they
  are: the step finishes, and only if its worker really died does the visibility
  timeout bring it back. A step that ends after its channel closed is acknowledged
  on a connection of its own.
* **One redis client per channel.** Kombu builds a new redis client, a few hundred
  response callbacks each time, for every message published, delivered and
  acknowledged: a third of a worker's own CPU per step, and a tenth of the bot's
  publish. The channel's one client is used instead (its pool is thread-safe).
"""
from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Iterator
from typing import Any

import redis
from kombu.transport import redis as kombu_redis
from redis.exceptions import RedisError

log = logging.getLogger(__name__)

QOS: Any = kombu_redis.QoS  # kombu is untyped: its methods are called through these
CHANNEL: Any = kombu_redis.Channel


class PatientQoS(kombu_redis.QoS):
    """Redis QoS that leaves unacknowledged messages alone when its channel closes."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        QOS.__init__(self, *args, **kwargs)
        self.connparams: dict[str, Any] = CHANNEL._connparams(self.channel)  # for after close

    @contextlib.contextmanager
    def pipe_or_acquire(self, pipe: Any = None, client: Any = None) -> Iterator[Any]:
        yield pipe or (client or self.channel.client_of_channel).pipeline()

    def restore_unacked_once(self, stderr: Any = None) -> None:
        QOS._flush(self)  # the acknowledged ones
        if self._delivered:
            log.warning("the broker connection closed with %d step(s) unacknowledged: "
                        "left for the visibility timeout, not queued again now",
                        len(self._delivered))

    def ack(self, delivery_tag: str) -> None:
        if self.channel.connection is not None:
            QOS.ack(self, delivery_tag)
            return
        pool = redis.ConnectionPool(**self.connparams)
        try:
            pipe: Any = redis.Redis(connection_pool=pool).pipeline()
            pipe.zrem(self.unacked_index_key, delivery_tag).hdel(self.unacked_key, delivery_tag)
            pipe.execute()
        except RedisError as exc:
            log.warning("could not acknowledge a step after the broker connection closed "
                        "(%s): it will be delivered again and answer the same", exc)
        finally:
            pool.disconnect()
        self._quick_ack(delivery_tag)

    def reject(self, delivery_tag: str, requeue: bool = False) -> None:
        if self.channel.connection is not None:
            QOS.reject(self, delivery_tag, requeue)
            return
        self._quick_ack(delivery_tag)  # left for the visibility timeout


class Channel(kombu_redis.Channel):
    """A redis channel with ``PatientQoS`` and one client for its blocking commands."""

    QoS = PatientQoS

    @functools.cached_property
    def client_of_channel(self) -> Any:
        return CHANNEL._create_client(self)

    @contextlib.contextmanager
    def conn_or_acquire(self, client: Any = None) -> Iterator[Any]:
        yield client or self.client_of_channel


class Transport(kombu_redis.Transport):
    Channel = Channel
