"""Redis clients for every part of the library: one server or a Redis Cluster, with bounded pools.

The exact cache, the invalidation stream and the semantic store all get their client here, so
they connect the same way:

* **one server** (``redis://``, ``rediss://``, ``unix://``, or host/port): ``redis.asyncio.Redis``
  on a *blocking* pool of ``max_connections``. A call waits for a free connection; a caller's
  deadline that runs out during that wait (see :data:`WAITING`), or the pool's own backstop
  (:class:`RedisBusyError`), is counted as busy (a miss) and not as a Redis failure: a burst of
  requests does not open the circuit breaker.
* **Redis Cluster** (``redis+cluster://h1:p1,h2:p2`` or ``CacheConfig.redis_cluster_nodes``):
  redis-py's own ``redis.asyncio.cluster.RedisCluster``. Its per-node pools do not wait (they
  raise at their limit), so every command passes a gate of ``max_connections`` slots with the
  same bounded wait; the nodes' own limit has headroom above it for pipelines.

All clients return raw bytes. Their own socket timeouts are ``2 * timeout + pool_timeout``: the
caller's :class:`~.redis_store.RedisGuard` bounds each call (``timeout + pool_timeout``) and decides
what counts as a failure; the socket timeouts are the backstop for callers without one.
"""

from __future__ import annotations

import asyncio
import contextvars
from typing import Any
from urllib.parse import unquote, urlsplit

from redis.exceptions import ConnectionError as RedisConnectionError

__all__ = ["RedisBusyError", "make_redis_client", "redis_client_from_config", "CLUSTER_SCHEMES", "parse_cluster_url"]

CLUSTER_SCHEMES = ("redis+cluster://", "rediss+cluster://")
_NODE_HEADROOM = 16  # connections per cluster node beyond the gate (pipelines bypass it)
_MAX_CONNECTING = 4  # new connections being opened at once, per pool


class RedisBusyError(RedisConnectionError):
    """No pooled connection became free within the pool timeout: the pool is busy, Redis is not at fault."""


WAITING = contextvars.ContextVar("enhanced_llm_redis_waiting", default=False)
"""True while the current task waits for a pooled connection (or a turn to open one), and still True
when that wait was interrupted: a caller's deadline that fires then is a busy pool, not a Redis failure.
A caller resets it before each call (see :class:`~.redis_store.RedisGuard`)."""


def _bounded_pool_class() -> type:
    import redis.asyncio as aioredis

    class BoundedPool(aioredis.BlockingConnectionPool):
        """redis-py's blocking pool; a wait that runs out is a :class:`RedisBusyError`, and at most
        ``_MAX_CONNECTING`` connections are opened at once (a cold burst of hundreds of calls would
        otherwise open every connection at the same moment, each slowing the others past its
        connect timeout; the others wait for the first ones instead)."""

        async def get_connection(self, *args: Any, **kwargs: Any) -> Any:
            WAITING.set(True)
            try:
                connection = await super().get_connection(*args, **kwargs)
                WAITING.set(False)
                return connection
            except RedisBusyError:
                raise
            except RedisConnectionError as exc:
                # the pool's wait raises ConnectionError("No connection available.") from a TimeoutError;
                # a failed connect raises ConnectionError from OSError (or redis' TimeoutError)
                if isinstance(exc.__cause__, TimeoutError):
                    raise RedisBusyError(f"no free Redis connection within {self.timeout}s") from exc
                raise

        async def ensure_connection(self, connection: Any) -> None:
            if connection.is_connected:
                return await super().ensure_connection(connection)
            gate = self.__dict__.get("_connect_gate")
            if gate is None:
                gate = self.__dict__["_connect_gate"] = _Gate(_MAX_CONNECTING, self.timeout or 0.1, "turn to connect")
            async with gate:
                WAITING.set(False)  # connecting is Redis's part: a connect that hangs is a failure
                await super().ensure_connection(connection)
                WAITING.set(True)

    return BoundedPool


def _no_client_setinfo() -> dict[str, Any]:
    """Skip CLIENT SETINFO on connect (two round trips per new connection) where redis-py allows it."""
    import inspect

    from redis.asyncio.connection import Connection

    return {"driver_info": None} if "driver_info" in inspect.signature(Connection.__init__).parameters else {}


class _Gate:
    """At most ``size`` commands at once; waiting for a slot is bounded by ``timeout``."""

    def __init__(self, size: int, timeout: float, what: str = "Redis Cluster slot") -> None:
        self.size, self.timeout, self.what = size, timeout, what
        self._sem: asyncio.Semaphore | None = None

    async def __aenter__(self) -> None:
        WAITING.set(True)
        if self._sem is None:
            self._sem = asyncio.Semaphore(self.size)
        if not self._sem.locked():
            await self._sem.acquire()  # returns at once
        else:
            try:
                async with asyncio.timeout(self.timeout):
                    await self._sem.acquire()
            except TimeoutError:
                raise RedisBusyError(f"no free {self.what} within {self.timeout}s") from None
        WAITING.set(False)

    async def __aexit__(self, *exc: object) -> None:
        assert self._sem is not None
        self._sem.release()


def _gated_cluster_class() -> type:
    from redis.asyncio.cluster import RedisCluster

    class GatedCluster(RedisCluster):
        """redis-py's cluster client; every command passes a bounded :class:`_Gate` first."""

        def __init__(self, *args: Any, gate: _Gate, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.gate = gate

        async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
            async with self.gate:
                return await super().execute_command(*args, **kwargs)

    return GatedCluster


def parse_cluster_url(url: str) -> tuple[list[tuple[str, int]], dict[str, Any]]:
    """``redis+cluster://[user:password@]h1:p1,h2:p2`` -> ([(h1, p1), (h2, p2)], {username, password, ssl})."""
    scheme, _, rest = url.partition("://")
    if scheme not in ("redis+cluster", "rediss+cluster"):
        raise ValueError(f"not a Redis Cluster URL: {url!r}")
    creds, _, hosts = rest.rpartition("@")
    hosts = hosts.split("/", 1)[0].split("?", 1)[0]
    nodes = []
    for part in filter(None, hosts.split(",")):
        split = urlsplit(f"//{part}")
        if split.hostname is None:
            raise ValueError(f"bad Redis Cluster node {part!r} in {url!r}")
        nodes.append((split.hostname, split.port or 6379))
    if not nodes:
        raise ValueError(f"no nodes in Redis Cluster URL {url!r}")
    options: dict[str, Any] = {"ssl": scheme == "rediss+cluster"}
    if creds:
        user, sep, password = creds.partition(":")
        options["username"] = unquote(user) or None
        options["password"] = unquote(password) if sep else None
    return nodes, options


def make_redis_client(
    *, url: str | None = None, host: str = "127.0.0.1", port: int = 6379, db: int = 0,
    password: str | None = None, timeout: float = 0.25, max_connections: int = 64,
    pool_timeout: float = 0.25, cluster_nodes: list[str] | None = None,
) -> Any:
    """A pooled, bounded client returning raw bytes: ``RedisCluster`` for cluster URLs/nodes, else ``Redis``."""
    if cluster_nodes or (url or "").startswith(CLUSTER_SCHEMES):
        return _make_cluster(url, cluster_nodes, password, timeout, max_connections, pool_timeout)
    import redis.asyncio as aioredis

    socket_timeout = 2 * timeout + pool_timeout
    options: dict[str, Any] = dict(
        socket_timeout=socket_timeout, socket_connect_timeout=socket_timeout, health_check_interval=30,
        max_connections=max_connections, timeout=socket_timeout, **_no_client_setinfo(),
    )
    pool_class = _bounded_pool_class()
    if url:
        pool = pool_class.from_url(url, **options)
    else:
        pool = pool_class(host=host, port=port, db=db, password=password, **options)
    return aioredis.Redis.from_pool(pool)  # aclose() closes the pool too


def _make_cluster(
    url: str | None, cluster_nodes: list[str] | None, password: str | None,
    timeout: float, max_connections: int, pool_timeout: float,
) -> Any:
    from redis.asyncio.cluster import ClusterNode
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff

    options: dict[str, Any] = {"password": password}
    if cluster_nodes:
        nodes = [(h, int(p)) for h, _, p in (n.rpartition(":") for n in cluster_nodes)]
    else:
        assert url is not None
        nodes, parsed = parse_cluster_url(url)
        options.update({k: v for k, v in parsed.items() if v is not None})
    return _gated_cluster_class()(
        startup_nodes=[ClusterNode(h, p) for h, p in nodes],
        gate=_Gate(max_connections, 2 * timeout + pool_timeout),
        max_connections=max_connections + _NODE_HEADROOM,
        socket_timeout=2 * timeout + pool_timeout, socket_connect_timeout=2 * timeout + pool_timeout,
        # one retry, no backoff: a dead master must cost a request one timeout, not seconds of backoff
        retry=Retry(NoBackoff(), 1),
        require_full_coverage=False,
        **_no_client_setinfo(),
        **options,
    )


def redis_client_from_config(config: Any, *, timeout: float | None = None) -> Any:
    """The client a :class:`~enhanced_llm.config.CacheConfig` describes (``timeout`` overrides its socket timeout)."""
    return make_redis_client(
        url=config.redis_url, host=config.redis_host, port=config.redis_port, db=config.redis_db,
        password=config.redis_password, timeout=timeout if timeout is not None else config.redis_timeout,
        max_connections=config.redis_max_connections, pool_timeout=config.redis_pool_timeout,
        cluster_nodes=config.redis_cluster_nodes,
    )
