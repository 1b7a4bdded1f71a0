"""Redis persistence and replica sync for the semantic index.

Layout under a namespace ``ns`` (key prefix + model + dimension, so vectors of
different models never mix):

* ``{ns}e:{entry_id}``: one key per entry, msgpack ``[scope, question, vector
  (float32 bytes), unix time]``, with an optional TTL (give it the exact
  cache's TTL so both expire together).
* ``{ns}log``: a Redis Stream of changes, ``XADD`` on every add/remove
  (``MAXLEN ~ stream_maxlen``), each tagged with the writer's instance id.

A process *hydrates* by noting the stream's last id, then ``SCAN``-ning the
entry keys and ``MGET``-ting them in batches; afterwards it *follows* the
stream from that id with ``XREAD``, skipping its own writes. Replaying an
addition twice is harmless (adds are idempotent by entry id). After an outage
the follower re-hydrates, since it may have missed changes (also when the
stream was trimmed past it); removals missed that way leave entries that point
at answers already gone: the exact cache then misses and nothing wrong is served.

Every call has a timeout and fails open: errors are counted, the store backs
off for ``retry_after`` seconds, and the caller keeps its in-process index.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import dataclass
from typing import Any, AsyncIterator

import numpy as np

from ..cache.redis_client import make_redis_client
from ..cache.redis_store import RedisGuard
from ..errors import CacheBackendError

__all__ = ["StoredEntry", "SemanticStore"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class StoredEntry:
    entry_id: str
    scope: str
    question: str
    vector: np.ndarray | None  # None for a removal


class SemanticStore:
    """Entries and vectors of the semantic index in Redis (``redis.asyncio``)."""

    def __init__(
        self,
        redis: Any,
        namespace: str,
        *,
        timeout: float = 0.25,
        retry_after: float = 1.0,
        entry_ttl: float | None = None,
        stream_maxlen: int = 100_000,
        batch_size: int = 500,
    ) -> None:
        try:
            import msgspec
            import redis.asyncio as aioredis  # noqa: F401 - checks the dependency; the client comes from cache.redis_client
        except ImportError as exc:  # pragma: no cover - both are core dependencies
            from enhanced_llm.errors import MissingDependencyError

            raise MissingDependencyError(exc.name or "redis", "semantic cache persistence") from exc
        self._owns_client = isinstance(redis, str)
        # a URL (redis://, redis+cluster://) gets the library's bounded client; XREADs block up to ~1 s
        self.redis = make_redis_client(url=redis, timeout=timeout + 2.0) if isinstance(redis, str) else redis
        self.ns = namespace
        self.timeout = timeout
        self.retry_after = retry_after
        self.entry_ttl = entry_ttl
        self.stream_maxlen = stream_maxlen
        self.batch_size = batch_size
        self.instance_id = uuid.uuid4().hex
        self.stream_key = f"{namespace}log"
        self.last_id = "0-0"
        self._enc = msgspec.msgpack.Encoder()
        self._dec = msgspec.msgpack.Decoder()
        self._guard = RedisGuard(timeout, retry_after)
        self.skipped = 0
        self.writes = 0
        self.hydrated = 0
        self.synced = 0

    # -- helpers -------------------------------------------------------------------

    def _key(self, entry_id: str) -> str:
        return f"{self.ns}e:{entry_id}"

    @property
    def available(self) -> bool:
        """False while backing off after an error."""
        return self._guard.available

    @property
    def errors(self) -> int:
        return self._guard.errors

    async def _call(self, coro: Any, timeout: float | None = None) -> Any:
        """Await one Redis call with a timeout; failures are counted and start a back-off."""
        try:
            return await self._guard.call(coro, timeout)
        except CacheBackendError as exc:
            log.warning("semantic store: %s", exc)
            raise

    def _pack(self, scope: str, question: str, vector: np.ndarray) -> bytes:
        vec = np.ascontiguousarray(vector, dtype=np.float32).tobytes()
        return self._enc.encode([scope, question, vec, time.time()])

    def _unpack(self, entry_id: str, raw: bytes) -> StoredEntry | None:
        try:
            scope, question, vec, _ts = self._dec.decode(raw)
            return StoredEntry(entry_id, scope, question, np.frombuffer(vec, dtype=np.float32))
        except Exception:  # noqa: BLE001 - a foreign or corrupt value is skipped
            return None

    # -- writes --------------------------------------------------------------------

    async def put(self, entry_id: str, scope: str, question: str, vector: np.ndarray) -> bool:
        """Store an entry and announce it; False when Redis is down (nothing raised)."""
        data = self._pack(scope, question, vector)
        ttl = int(self.entry_ttl) if self.entry_ttl else None
        return await self._write(entry_id, {"op": "add", "data": data}, lambda pipe: pipe.set(self._key(entry_id), data, ex=ttl))

    async def delete(self, entry_id: str) -> bool:
        """Remove an entry and announce it; False when Redis is down."""
        return await self._write(entry_id, {"op": "del"}, lambda pipe: pipe.delete(self._key(entry_id)))

    async def _write(self, entry_id: str, event: dict[str, Any], command: Any) -> bool:
        """Run ``command`` on a pipeline and announce ``event`` on the change stream, in one round trip."""
        if not self.available:
            self.skipped += 1
            return False
        pipe = self.redis.pipeline(transaction=False)
        command(pipe)
        pipe.xadd(
            self.stream_key,
            {**event, "id": entry_id, "origin": self.instance_id},
            maxlen=self.stream_maxlen,
            approximate=True,
        )
        try:
            await self._call(pipe.execute())
        except Exception:  # noqa: BLE001 - fail open
            return False
        self.writes += 1
        return True

    # -- reads ---------------------------------------------------------------------

    async def hydrate(self, progress: bool = True) -> AsyncIterator[list[StoredEntry]]:
        """Yield every stored entry, in batches; remembers where the change stream stood.

        Raises the Redis error (already counted) if Redis fails midway.
        """
        last = await self._call(self.redis.xrevrange(self.stream_key, count=1))
        self.last_id = _s(last[0][0]) if last else "0-0"
        bar = _progress_bar(progress)
        cursor: Any = 0
        prefix = self._key("")
        try:
            while True:
                cursor, keys = await self._call(
                    self.redis.scan(cursor=cursor, match=f"{prefix}*", count=self.batch_size)
                )
                if keys:
                    values = await self._call(self.redis.mget(keys))
                    batch = []
                    for k, v in zip(keys, values):
                        if v is not None:
                            e = self._unpack(_s(k)[len(prefix) :], v)
                            if e is not None:
                                batch.append(e)
                    self.hydrated += len(batch)
                    if bar is not None:
                        bar.update(len(batch))
                    if batch:
                        yield batch
                if int(cursor) == 0:
                    break
        finally:
            if bar is not None:
                bar.close()

    async def changes(self, block_ms: int = 1000) -> list[StoredEntry]:
        """Changes other instances made since the last call (waits up to ``block_ms``)."""
        resp = await self._call(
            self.redis.xread({self.stream_key: self.last_id}, count=self.batch_size, block=block_ms),
            timeout=block_ms / 1000 + self.timeout,
        )
        out: list[StoredEntry] = []
        for _stream, messages in resp or []:
            for msg_id, fields in messages:
                self.last_id = _s(msg_id)
                f = {_s(k): v for k, v in fields.items()}
                if _s(f.get("origin", b"")) == self.instance_id:
                    continue
                entry_id = _s(f.get("id", b""))
                if _s(f.get("op", b"")) == "del":
                    out.append(StoredEntry(entry_id, "", "", None))
                elif "data" in f:
                    e = self._unpack(entry_id, f["data"])
                    if e is not None:
                        out.append(e)
        self.synced += len(out)
        return out

    async def clear(self) -> int:
        """Delete every key of this namespace (tests, admin). Returns how many."""
        n = 0
        async for key in self.redis.scan_iter(match=f"{self.ns}*", count=self.batch_size):
            n += await self.redis.delete(key)
        return n

    async def close(self) -> None:
        if self._owns_client:
            try:
                await self.redis.aclose()
            except Exception:  # noqa: BLE001
                pass

    def stats(self) -> dict[str, Any]:
        return {
            "namespace": self.ns,
            "errors": self.errors,
            "skipped_while_down": self.skipped,
            "writes": self.writes,
            "hydrated": self.hydrated,
            "synced": self.synced,
            "available": self.available,
        }


def _s(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def _progress_bar(enabled: bool) -> Any:
    if not enabled:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    # disable=None: shown only on a terminal, so logs and CI stay clean.
    return tqdm(desc="hydrating semantic index", unit="entry", disable=None, leave=False)
