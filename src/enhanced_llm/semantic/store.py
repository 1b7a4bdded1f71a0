"""Redis persistence and replica sync for the semantic index.

Layout under a namespace ``ns`` (key prefix + model + dimension, so vectors of
different models never mix):

* ``{ns}e:{entry_id}``: one key per entry (see :mod:`.records` for the value, its
  optional HMAC signature and the checks it passes on read), with an optional TTL
  (give it the exact cache's TTL so both expire together).
* ``{ns}log``: a Redis Stream of changes, ``XADD`` on every add/remove
  (``MAXLEN ~ stream_maxlen``), each tagged with the writer's instance id.

A process *hydrates* by noting the stream's last id, then ``SCAN``-ning the
entry keys and reading them in batches; afterwards it *follows* the stream from
that id with ``XREAD``, skipping its own writes. Replaying an addition twice is
harmless (adds are idempotent by entry id).

A read that fails or times out (Redis paused, restarted, a slow network) is
retried from the last id read: nothing is re-scanned. Only when the stream shows
that records after that id were trimmed away (``XINFO STREAM``: its oldest record
is newer than ours, or records were written after ours and none is left; checked
after an error and whenever a read came back full) does the follower re-hydrate. Removals missed while Redis was unreachable
leave entries that point at answers already gone: the exact cache then misses and
nothing wrong is served.

**Redis Cluster.** ``redis`` may be a ``redis.asyncio.Redis`` or a
``redis.asyncio.cluster.RedisCluster``. No command names two keys: writes are a
non-transactional pipeline of one-key commands (redis-py routes each to its node),
hydration reads each key with its own ``GETRANGE`` in a pipeline (bounded to
``max_value_bytes`` on the server side) instead of a multi-key ``MGET``, and
``SCAN`` runs on every primary in turn. Entry keys carry no hash tag on purpose:
nothing needs them on one node, and a tag would put a whole model's entries on
one master. Hydration and ``clear`` are the only scans; neither runs on the
request path.

Every call has a timeout and fails open: errors are counted, the store backs
off for ``retry_after`` seconds, and the caller keeps its in-process index.
A write that fails (or is skipped while Redis is backed off) is kept, the latest
one per entry, up to ``max_unsent_bytes``, and sent again by :meth:`resend` once
Redis answers (the follower calls it): other replicas get the vector late
instead of never. A newer write of the same entry replaces the one kept.
Hydration's page reads (a ``SCAN`` page, then ``batch_size`` values of ~2 KB
each, parsed on the event loop) are bulk work off the request path and get
:data:`PAGE_TIMEOUT` instead of the per-call ``timeout``.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, AsyncIterator, Callable

from ..cache.redis_client import make_redis_client
from ..cache.redis_store import RedisGuard
from ..errors import CacheBackendError
from .records import EntryCodec, StoredEntry

__all__ = ["StoredEntry", "SemanticStore"]

log = logging.getLogger(__name__)

#: Seconds a hydration page read may take (at least the per-call timeout). Measured: with the
#: 0.25 s per-call timeout, a late server's hydration of 100,000 entries broke off after ~51,000
#: in 3 runs of 3 (2 cores, the server's engine starting beside it) and started over.
PAGE_TIMEOUT = 2.0
_UNSENT_OVERHEAD = 400  # bytes per kept write beyond its value: the event dict, the closure, the slot


@dataclass(slots=True)
class _Unsent:
    """A write that did not reach Redis: its change record and the command that stores it."""

    event: dict[str, Any]
    command: Callable[[Any], Any]
    size: int


class SemanticStore:
    """Entries and vectors of the semantic index in Redis (``redis.asyncio`` client or cluster client).

    ``dim``: the vector size every value read back must have; ``signing_key``: sign what is
    written and refuse what is not signed with it (see :mod:`.records`); ``max_value_bytes``: the
    largest value written or read.
    """

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
        dim: int | None = None,
        signing_key: Any = None,
        max_value_bytes: int = 64 << 10,
        max_unsent_bytes: int = 1 << 20,
    ) -> None:
        try:
            import msgspec  # noqa: F401
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
        self.codec = EntryCodec(namespace, dim=dim, signing_key=signing_key, max_value_bytes=max_value_bytes)
        self._guard = RedisGuard(timeout, retry_after)
        self.behind = False  # the last read came back full: the stream may have run ahead of us
        self.skipped = 0
        self.writes = 0
        self.hydrated = 0
        self.hydrations = 0
        self.synced = 0
        self.gap_resyncs = 0
        self.max_unsent_bytes = max_unsent_bytes
        self._unsent: OrderedDict[str, _Unsent] = OrderedDict()  # entry id -> its latest failed write
        self._unsent_bytes = 0
        self._resending: str | None = None  # the entry whose kept write is being sent now
        self._order = asyncio.Lock()  # a resend and a newer write of the same entry never overlap
        self.resent = 0
        self.unsent_dropped = 0

    # -- helpers -------------------------------------------------------------------

    def _key(self, entry_id: str) -> str:
        return f"{self.ns}e:{entry_id}"

    @property
    def cluster(self) -> bool:
        """Is the client a Redis Cluster client (one SCAN per primary)?"""
        return hasattr(self.redis, "get_primaries")

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

    # -- writes --------------------------------------------------------------------

    async def put(self, entry_id: str, scope: str, question: str, vector: Any) -> bool:
        """Store an entry and announce it; False when Redis is down or the value too large (nothing raised)."""
        data = self.codec.pack(entry_id, scope, question, vector)
        if data is None:
            return False
        ttl = int(self.entry_ttl) if self.entry_ttl else None
        return await self._write(
            entry_id, {"op": "add", "data": data}, lambda pipe: pipe.set(self._key(entry_id), data, ex=ttl), len(data)
        )

    async def delete(self, entry_id: str) -> bool:
        """Remove an entry and announce it; False when Redis is down."""
        event: dict[str, Any] = {"op": "del"}
        sig = self.codec.del_signature(entry_id)
        if sig is not None:
            event["sig"] = sig
        return await self._write(entry_id, event, lambda pipe: pipe.delete(self._key(entry_id)), 0)

    async def _write(self, entry_id: str, event: dict[str, Any], command: Any, size: int) -> bool:
        """Send one write; one that fails is kept (replacing an older one of the same entry)."""
        if entry_id in self._unsent or entry_id == self._resending:
            async with self._order:  # after a resend of this entry in flight; this write supersedes it
                self._forget_unsent(entry_id)
                sent = await self._send(entry_id, event, command)
        else:
            sent = await self._send(entry_id, event, command)
        if not sent:
            self._keep_unsent(entry_id, _Unsent(event, command, size + _UNSENT_OVERHEAD))
        return sent

    def _keep_unsent(self, entry_id: str, write: _Unsent) -> None:
        self._forget_unsent(entry_id)
        self._unsent[entry_id] = write
        self._unsent_bytes += write.size
        while self._unsent_bytes > self.max_unsent_bytes and self._unsent:
            _, dropped = self._unsent.popitem(last=False)  # the oldest goes first
            self._unsent_bytes -= dropped.size
            self.unsent_dropped += 1

    def _forget_unsent(self, entry_id: str) -> None:
        old = self._unsent.pop(entry_id, None)
        if old is not None:
            self._unsent_bytes -= old.size

    async def resend(self) -> int:
        """Send the kept writes again, oldest first, while Redis answers; returns how many went."""
        sent = 0
        while self._unsent and self.available:
            entry_id, write = next(iter(self._unsent.items()))
            async with self._order:
                if self._unsent.get(entry_id) is not write:
                    continue  # superseded while we waited
                self._forget_unsent(entry_id)
                self._resending = entry_id
                try:
                    ok = await self._send(entry_id, write.event, write.command)
                finally:
                    self._resending = None
            if not ok:
                if entry_id not in self._unsent:  # nothing newer came meanwhile: keep it, in front
                    self._keep_unsent(entry_id, write)
                    self._unsent.move_to_end(entry_id, last=False)
                break
            sent += 1
        self.resent += sent
        return sent

    @property
    def unsent(self) -> int:
        """Writes kept for :meth:`resend`."""
        return len(self._unsent)

    async def _send(self, entry_id: str, event: dict[str, Any], command: Any) -> bool:
        """Run ``command`` on a pipeline and announce ``event`` on the change stream, in one round trip
        (two one-key commands, non-transactional: on a cluster, redis-py sends each to its node)."""
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

    async def _scan_pages(self, match: str) -> AsyncIterator[list[Any]]:
        """Pages of keys matching ``match``: one SCAN cursor per primary on a cluster, else one."""
        if self.cluster:
            for node in self.redis.get_primaries():
                cursor: Any = 0
                while True:
                    cursors, keys = await self._call(
                        self.redis.scan(cursor=cursor, match=match, count=self.batch_size, target_nodes=node),
                        timeout=self._page_timeout,
                    )
                    cursor = next(iter(cursors.values())) if isinstance(cursors, dict) else cursors
                    if keys:
                        yield list(keys)
                    if int(cursor) == 0:
                        break
            return
        cursor = 0
        while True:
            cursor, keys = await self._call(
                self.redis.scan(cursor=cursor, match=match, count=self.batch_size), timeout=self._page_timeout
            )
            if keys:
                yield list(keys)
            if int(cursor) == 0:
                break

    async def _read_values(self, keys: list[Any]) -> list[Any]:
        """Each key's value, at most ``max_value_bytes + 1`` bytes of it (the server cuts it), in one pipeline
        of one-key reads (no MGET: its keys may lie in different slots). A key of another type reads as
        the error redis-py returns for it."""
        pipe = self.redis.pipeline(transaction=False)
        for k in keys:
            pipe.getrange(k, 0, self.codec.max_value_bytes)  # inclusive end: one byte more than allowed
        return await self._call(pipe.execute(raise_on_error=False), timeout=self._page_timeout)

    @property
    def _page_timeout(self) -> float:
        return max(self.timeout, PAGE_TIMEOUT)

    async def hydrate(self, progress: bool = True) -> AsyncIterator[list[StoredEntry]]:
        """Yield every stored entry that passes the checks, in batches; remembers where the change stream stood.

        Raises the Redis error (already counted) if Redis fails midway.
        """
        last = await self._call(self.redis.xrevrange(self.stream_key, count=1))
        self.last_id = _s(last[0][0]) if last else "0-0"
        self.hydrations += 1
        bar = _progress_bar(progress)
        prefix = self._key("")
        try:
            async for keys in self._scan_pages(f"{_glob_escape(prefix)}*"):
                values = await self._read_values(keys)
                batch = []
                for k, v in zip(keys, values):
                    if isinstance(v, Exception):
                        self.codec.rejected["malformed"] += 1
                        continue
                    if not v:  # expired or deleted between SCAN and the read
                        continue
                    name = _s(k)
                    e = self.codec.unpack(name[len(prefix) :], v)
                    if e is not None:
                        batch.append(e)
                self.hydrated += len(batch)
                if bar is not None:
                    bar.update(len(batch))
                if batch:
                    yield batch
        finally:
            if bar is not None:
                bar.close()

    async def changes(self, block_ms: int = 1000) -> list[StoredEntry]:
        """Changes other instances made since the last call (waits up to ``block_ms``).

        On an error or timeout nothing moves: the next call reads on from the same id.
        """
        resp = await self._call(
            self.redis.xread({self.stream_key: self.last_id}, count=self.batch_size, block=block_ms),
            timeout=block_ms / 1000 + self.timeout,
        )
        out: list[StoredEntry] = []
        read = 0
        for _stream, messages in resp or []:
            for msg_id, fields in messages:
                read += 1
                self.last_id = _s(msg_id)
                e = self.codec.record(fields, self.instance_id)
                if e is not None:
                    out.append(e)
        self.behind = read >= self.batch_size
        self.synced += len(out)
        return out

    async def missed_changes(self) -> bool:
        """Were records after :attr:`last_id` trimmed from the stream (so following it would miss them)?"""
        pipe = self.redis.pipeline(transaction=False)
        pipe.xinfo_stream(self.stream_key)
        (info,) = await self._call(pipe.execute(raise_on_error=False))  # "no such key" is an answer, not a fault
        if isinstance(info, Exception) or not isinstance(info, dict):
            return False  # no stream (yet, or Redis lost its data): nothing to replay
        last = _id_tuple(self.last_id)
        if info.get("entries-added") is not None and info["entries-added"] == info.get("length"):
            return False  # nothing was ever trimmed or deleted
        generated = info.get("last-generated-id")
        if generated is not None and _id_tuple(generated) <= last:
            return False  # nothing was written after our position
        first = info.get("first-entry")
        if not first:
            return True  # written after our position, and all gone
        # The oldest record left is newer than ours: some between may be gone (a false alarm only when
        # trimming stopped exactly at our position, which costs one re-hydration).
        if _id_tuple(first[0]) > last:
            return True
        deleted = info.get("max-deleted-entry-id")  # XDEL (Redis >= 7.0)
        return deleted is not None and _id_tuple(deleted) > last

    async def clear(self) -> int:
        """Delete every key of this namespace (tests, admin; one key per DEL). Returns how many."""
        n = 0
        async for keys in self._scan_pages(f"{_glob_escape(self.ns)}*"):
            for key in keys:
                n += await self._call(self.redis.delete(key))
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
            "hydrations": self.hydrations,
            "gap_resyncs": self.gap_resyncs,
            "synced": self.synced,
            "signing": self.codec.signing,
            "rejected": dict(self.codec.rejected),
            "refused_writes": self.codec.refused_writes,
            "unsent": len(self._unsent),
            "unsent_bytes": self._unsent_bytes,
            "resent": self.resent,
            "unsent_dropped": self.unsent_dropped,
            "available": self.available,
        }


def _s(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def _id_tuple(v: Any) -> tuple[int, int]:
    ms, _, seq = _s(v).partition("-")
    return int(ms), int(seq or 0)


def _glob_escape(text: str) -> str:
    """``text`` as a literal in a SCAN MATCH pattern."""
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


def _progress_bar(enabled: bool) -> Any:
    if not enabled:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    # disable=None: shown only on a terminal, so logs and CI stay clean.
    return tqdm(desc="hydrating semantic index", unit="entry", disable=None, leave=False)
