"""LMDB-backed feature store.

One environment under ``<data_dir>/store`` holds every named database. All keys
of tenant data start with ``tenant_id + b"\\x00"`` so tenants never collide.

| db            | key                         | value                                        |
|---------------|-----------------------------|----------------------------------------------|
| ``meta``      | name                        | global settings (admin key hash, cursor secret) |
| ``tenants``   | tenant                      | tenant config JSON (see server.tenancy)      |
| ``config_history`` | tenant, be64 version   | every stored version of the tenant config JSON (append-only) |
| ``catalog``   | tenant, item_id             | uint32 dense index                           |
| ``item_meta`` | tenant, be32 index          | JSON {id, title, category, maturity_rating, ...} |
| ``item_rows`` | tenant, be32 chunk          | float32[CHUNK_ROWS, ITEM_WIDTH] (zero-copy)  |
| ``item_stats``| tenant, be32 index          | float64[STAT_WIDTH] interaction counters (kernels.layout) |
| ``impressions``| tenant, user_id            | the user's last IMPRESSION_CAP impressions: ring of (item, time) |
| ``users``     | tenant, user_id             | user row + seen ring (see kernels.layout)    |
| ``lists``     | tenant, name                | int32 item indices (popular, trending:<cat>, new, segment:<cat>, segment:name:<segment>) |
| ``state``     | tenant, name                | small tenant state (n_items, items_gen, catalog_gen, categories, models, indexes) |
| ``outbox``    | be64 sequence               | events spooled while NATS was unreachable (server.events.outbox) |
| ``progress``  | name                        | last applied stream sequence (b"events"), outbox high-water mark |
| ``erased``    | tenant, sha256(user_id)[:16] | erasure / opt-out tombstone JSON (server.events.erasure) |
| ``models``    | tenant, model version (sha256) | registered ranking model JSON (server.models.registry) |

Serving reads through :class:`StoreSnapshot`, one short read transaction per
request. Item chunk addresses are cached across transactions and re-resolved
only when ``items_gen`` changes: every write that rewrites an item chunk bumps
``items_gen`` in the same transaction, and LMDB never moves or frees pages of a
value that was not rewritten, so a cached address stays valid until then.
``catalog_gen`` moves only with the catalog itself (items added, changed,
deactivated, deleted), not with the ingest worker's counter roll-ups, so caches
of item metadata and training's "did the catalog change" check key on it.
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass, field
from typing import Iterable, Iterator

import lmdb
import numpy as np

from kernels.layout import (
    CHUNK_ROWS,
    CHUNK_ROWS_LOG2,
    IMPRESSION_CAP,
    ITEM_WIDTH,
    SEEN_CAP,
    USER_WIDTH,
)

SEP = b"\x00"
DB_NAMES = ("meta", "tenants", "catalog", "item_meta", "item_rows", "users", "lists", "state", "outbox", "progress",
            "item_stats", "erased", "impressions", "models", "config_history", "sessions")
USER_VALUE_BYTES = USER_WIDTH * 4 + 8 + SEEN_CAP * 4
IMPRESSIONS_BYTES = 8 + IMPRESSION_CAP * 8  # int32 head, int32 count, int32 items[CAP], uint32 seconds[CAP]


@dataclass(frozen=True)
class LmdbStoreConfig:
    """Where and how big. ``map_size`` is virtual address space, not disk."""

    path: str
    map_size: int = 64 << 30
    readonly: bool = False
    sync: bool = True
    max_readers: int = 1024


def tkey(tenant: str, name: str | bytes) -> bytes:
    if isinstance(name, str):
        name = name.encode()
    return tenant.encode() + SEP + name


def idx_key(tenant: str, index: int) -> bytes:
    return tenant.encode() + SEP + struct.pack(">I", index)


def empty_user_value() -> bytearray:
    buf = bytearray(USER_VALUE_BYTES)
    row = np.frombuffer(buf, dtype=np.float32, count=USER_WIDTH)
    from kernels.layout import USER_CONSENT

    row[USER_CONSENT] = 1.0
    return buf


def user_row_view(value) -> np.ndarray:
    return np.frombuffer(value, dtype=np.float32, count=USER_WIDTH)


def user_seen_view(value) -> np.ndarray:
    """The seen ring's occupied slots (order within the ring is not meaningful)."""
    head_count = np.frombuffer(value, dtype=np.int32, count=2, offset=USER_WIDTH * 4)
    count = int(head_count[1])
    return np.frombuffer(value, dtype=np.int32, count=min(count, SEEN_CAP), offset=USER_WIDTH * 4 + 8)


def user_recent_items(value, n: int) -> np.ndarray:
    """The user's ``n`` most recently seen item indices, oldest first (a copy)."""
    head, count = np.frombuffer(value, dtype=np.int32, count=2, offset=USER_WIDTH * 4)
    ring = np.frombuffer(value, dtype=np.int32, count=SEEN_CAP, offset=USER_WIDTH * 4 + 8)
    ordered = np.concatenate([ring[head:], ring[:head]]) if count >= SEEN_CAP else ring[:count]
    return ordered[-n:].copy() if n > 0 else ordered[:0].copy()


def push_seen(value: bytearray, item_indices: Iterable[int]) -> None:
    """Append item indices to the seen ring of a mutable user value, oldest evicted first."""
    hc = np.frombuffer(value, dtype=np.int32, count=2, offset=USER_WIDTH * 4)
    ring = np.frombuffer(value, dtype=np.int32, count=SEEN_CAP, offset=USER_WIDTH * 4 + 8)
    head, count = int(hc[0]), int(hc[1])
    for index in item_indices:
        ring[head] = index
        head = (head + 1) % SEEN_CAP
        count = min(count + 1, SEEN_CAP)
    hc[0], hc[1] = head, count


def empty_impressions() -> bytearray:
    return bytearray(IMPRESSIONS_BYTES)


def push_impression(value: bytearray, index: int, t_s: float) -> None:
    """Records an impression of item ``index`` at ``t_s`` (seconds); the oldest recorded goes first."""
    hc = np.frombuffer(value, dtype=np.int32, count=2)
    items = np.frombuffer(value, dtype=np.int32, count=IMPRESSION_CAP, offset=8)
    seconds = np.frombuffer(value, dtype=np.uint32, count=IMPRESSION_CAP, offset=8 + IMPRESSION_CAP * 4)
    head = int(hc[0])
    items[head], seconds[head] = index, max(int(t_s), 0)
    hc[0], hc[1] = (head + 1) % IMPRESSION_CAP, min(int(hc[1]) + 1, IMPRESSION_CAP)


def impressions_since(value, since_s: float) -> np.ndarray:
    """int32 item indices of the recorded impressions at or after ``since_s``, one entry per impression."""
    count = int(np.frombuffer(value, dtype=np.int32, count=2)[1])
    items = np.frombuffer(value, dtype=np.int32, count=count, offset=8)
    seconds = np.frombuffer(value, dtype=np.uint32, count=count, offset=8 + IMPRESSION_CAP * 4)
    return items[seconds >= since_s]


class LmdbStore:
    """The environment plus typed accessors. Writers use the ``put_*`` methods
    inside ``with store.write() as txn``; readers use :meth:`snapshot`."""

    def __init__(self, config: LmdbStoreConfig):
        self.config = config
        os.makedirs(config.path, exist_ok=True)
        self.env = lmdb.open(
            config.path,
            map_size=config.map_size,
            max_dbs=len(DB_NAMES) + 4,
            readonly=config.readonly,
            sync=config.sync,
            max_readers=config.max_readers,
            lock=True,
        )
        self.db = {}
        for name in DB_NAMES:
            try:
                self.db[name] = self.env.open_db(name.encode(), create=not config.readonly)
            except lmdb.NotFoundError:  # read-only, on a data dir written before this db existed
                continue
        # tenant -> (items_gen, chunk addresses, n_items, chunk views)
        self._chunk_cache: dict[str, tuple[int, np.ndarray, int, list]] = {}

    @classmethod
    def open(cls, data_dir: str, readonly: bool = False) -> "LmdbStore":
        return cls(LmdbStoreConfig(path=os.path.join(data_dir, "store"), readonly=readonly))

    def close(self) -> None:
        self.env.close()

    # ------------------------------------------------------------------ writes
    def write(self) -> lmdb.Transaction:
        return self.env.begin(write=True)

    def put_json(self, txn, dbname: str, key: bytes, value) -> None:
        txn.put(key, json.dumps(value, separators=(",", ":")).encode(), db=self.db[dbname])

    def get_json(self, txn, dbname: str, key: bytes, default=None):
        raw = txn.get(key, db=self.db[dbname])
        return default if raw is None else json.loads(bytes(raw))

    def set_state(self, txn, tenant: str, name: str, value) -> None:
        self.put_json(txn, "state", tkey(tenant, name), value)

    def get_state(self, txn, tenant: str, name: str, default=None):
        return self.get_json(txn, "state", tkey(tenant, name), default)

    def bump_items_gen(self, txn, tenant: str) -> int:
        gen = int(self.get_state(txn, tenant, "items_gen", 0)) + 1
        self.set_state(txn, tenant, "items_gen", gen)
        return gen

    def tenants_with_items(self, txn) -> list[str]:
        """Every tenant that has a catalog (state ``n_items``), configured or not."""
        suffix = SEP + b"n_items"
        return [bytes(k)[:-len(suffix)].decode() for k in txn.cursor(db=self.db["state"]).iternext(values=False)
                if bytes(k).endswith(suffix)]

    def bump_catalog_gen(self, txn, tenant: str) -> int:
        gen = int(self.get_state(txn, tenant, "catalog_gen", 0)) + 1
        self.set_state(txn, tenant, "catalog_gen", gen)
        return gen

    def get_item_stats(self, txn, tenant: str, index: int) -> np.ndarray | None:
        """A copy of the item's float64[STAT_WIDTH] counters, None when it has none."""
        raw = txn.get(idx_key(tenant, index), db=self.db["item_stats"])
        return None if raw is None else np.frombuffer(raw, dtype=np.float64).copy()

    def put_item_stats(self, txn, tenant: str, index: int, stats: np.ndarray) -> None:
        txn.put(idx_key(tenant, index), np.ascontiguousarray(stats, dtype=np.float64).tobytes(),
                db=self.db["item_stats"])

    def iter_item_stats(self, txn, tenant: str) -> Iterator[tuple[int, np.ndarray]]:
        """(index, float64 counters view) of every item of the tenant that has counters, by index."""
        for key, value in self.iter_tenant(txn, "item_stats", tenant):
            yield struct.unpack(">I", key)[0], np.frombuffer(value, dtype=np.float64)

    def iter_tenant(self, txn, dbname: str, tenant: str) -> Iterator[tuple[bytes, object]]:
        """(key without the tenant prefix, value) of every entry of ``tenant`` in db ``dbname``, in key order."""
        prefix = tenant.encode() + SEP
        cur = txn.cursor(db=self.db[dbname])
        if cur.set_range(prefix):
            for key, value in cur:
                key = bytes(key)
                if not key.startswith(prefix):
                    break
                yield key[len(prefix):], value

    def clear_item_stats(self, txn, tenant: str) -> None:
        prefix = tenant.encode() + SEP
        cur = txn.cursor(db=self.db["item_stats"])
        while cur.set_range(prefix) and bytes(cur.key()).startswith(prefix):
            cur.delete()

    def put_list(self, txn, tenant: str, name: str, indices: np.ndarray) -> None:
        txn.put(tkey(tenant, name), np.ascontiguousarray(indices, dtype=np.int32).tobytes(), db=self.db["lists"])

    def put_item_rows(self, txn, tenant: str, rows: np.ndarray, first_index: int = 0) -> None:
        """Write rows[i] as the row of item ``first_index + i``; rewrites whole chunks
        (read-modify-write for partial chunks) and bumps ``items_gen``."""
        rows = np.ascontiguousarray(rows, dtype=np.float32)
        assert rows.ndim == 2 and rows.shape[1] == ITEM_WIDTH, rows.shape
        db = self.db["item_rows"]
        end = first_index + rows.shape[0]
        chunk = first_index >> CHUNK_ROWS_LOG2
        while chunk * CHUNK_ROWS < end:
            lo, hi = chunk * CHUNK_ROWS, (chunk + 1) * CHUNK_ROWS
            key = idx_key(tenant, chunk)
            old = txn.get(key, db=db)
            block = (np.frombuffer(old, dtype=np.float32).reshape(CHUNK_ROWS, ITEM_WIDTH).copy()
                     if old is not None else np.zeros((CHUNK_ROWS, ITEM_WIDTH), dtype=np.float32))
            s, e = max(lo, first_index), min(hi, end)
            block[s - lo:e - lo] = rows[s - first_index:e - first_index]
            txn.put(key, block.tobytes(), db=db)
            chunk += 1
        self.bump_items_gen(txn, tenant)

    def put_rows_at(self, txn, tenant: str, indices, rows: np.ndarray) -> None:
        """Write rows[i] as the row of item indices[i] (new chunks start zeroed); rewrites only
        the touched chunks and bumps ``items_gen``. Cost is per touched chunk, not per catalog."""
        indices = np.asarray(indices, dtype=np.int64)
        rows = np.asarray(rows, dtype=np.float32).reshape(indices.shape[0], ITEM_WIDTH)
        db = self.db["item_rows"]
        for chunk in np.unique(indices >> CHUNK_ROWS_LOG2):
            key = idx_key(tenant, int(chunk))
            old = txn.get(key, db=db)
            block = (np.frombuffer(old, dtype=np.float32).reshape(CHUNK_ROWS, ITEM_WIDTH).copy()
                     if old is not None else np.zeros((CHUNK_ROWS, ITEM_WIDTH), dtype=np.float32))
            sel = (indices >> CHUNK_ROWS_LOG2) == chunk
            block[indices[sel] & (CHUNK_ROWS - 1)] = rows[sel]
            txn.put(key, block.tobytes(), db=db)
        self.bump_items_gen(txn, tenant)

    def set_item_fields(self, txn, tenant: str, indices: np.ndarray, column: int, values) -> None:
        """Set one column for some items (e.g. deactivate); rewrites only the touched chunks."""
        indices = np.asarray(indices, dtype=np.int64)
        rows = self.read_rows_at(txn, tenant, indices)
        rows[:, column] = np.broadcast_to(np.asarray(values, dtype=np.float32), indices.shape)
        self.put_rows_at(txn, tenant, indices, rows)

    def read_rows_at(self, txn, tenant: str, indices) -> np.ndarray:
        """Copies of the rows of some items (zeros for a missing chunk), one get per chunk."""
        indices = np.asarray(indices, dtype=np.int64)
        out = np.zeros((indices.shape[0], ITEM_WIDTH), dtype=np.float32)
        db = self.db["item_rows"]
        for chunk in np.unique(indices >> CHUNK_ROWS_LOG2):
            raw = txn.get(idx_key(tenant, int(chunk)), db=db)
            if raw is not None:
                sel = (indices >> CHUNK_ROWS_LOG2) == chunk
                block = np.frombuffer(raw, dtype=np.float32).reshape(CHUNK_ROWS, ITEM_WIDTH)
                out[sel] = block[indices[sel] & (CHUNK_ROWS - 1)]
        return out

    def read_item_rows(self, txn, tenant: str, n_items: int) -> np.ndarray:
        """Copy of all item rows (offline jobs only)."""
        out = np.zeros((n_items, ITEM_WIDTH), dtype=np.float32)
        db = self.db["item_rows"]
        for chunk in range((n_items + CHUNK_ROWS - 1) >> CHUNK_ROWS_LOG2):
            raw = txn.get(idx_key(tenant, chunk), db=db)
            if raw is None:
                continue
            block = np.frombuffer(raw, dtype=np.float32).reshape(CHUNK_ROWS, ITEM_WIDTH)
            lo = chunk * CHUNK_ROWS
            hi = min(lo + CHUNK_ROWS, n_items)
            out[lo:hi] = block[: hi - lo]
        return out

    def put_item_meta(self, txn, tenant: str, index: int, item_id: str, meta: dict) -> None:
        txn.put(tkey(tenant, item_id), struct.pack("<I", index), db=self.db["catalog"])
        self.put_json(txn, "item_meta", idx_key(tenant, index), dict(meta, id=item_id))

    def put_user(self, txn, tenant: str, user_id: str, value: bytes | bytearray) -> None:
        assert len(value) == USER_VALUE_BYTES
        txn.put(tkey(tenant, user_id), bytes(value), db=self.db["users"])

    def get_user_copy(self, txn, tenant: str, user_id: str) -> bytearray | None:
        raw = txn.get(tkey(tenant, user_id), db=self.db["users"])
        return None if raw is None else bytearray(raw)

    def get_impressions_copy(self, txn, tenant: str, user_id: str) -> bytearray | None:
        raw = txn.get(tkey(tenant, user_id), db=self.db["impressions"])
        return None if raw is None else bytearray(raw)

    def put_impressions(self, txn, tenant: str, user_id: str, value: bytearray) -> None:
        txn.put(tkey(tenant, user_id), bytes(value), db=self.db["impressions"])

    def delete_impressions(self, txn, tenant: str, user_id: str) -> bool:
        return txn.delete(tkey(tenant, user_id), db=self.db["impressions"])

    def delete_user(self, txn, tenant: str, user_id: str) -> bool:
        """Deletes the user's row and current session (server.store.sessions); True if either existed."""
        had_row = txn.delete(tkey(tenant, user_id), db=self.db["users"])
        return self.delete_session(txn, tenant, user_id) or had_row

    def delete_session(self, txn, tenant: str, user_id: str) -> bool:
        return txn.delete(tkey(tenant, user_id), db=self.db["sessions"])

    def iter_users(self, txn, tenant: str) -> Iterator[tuple[str, bytes]]:
        for key, value in self.iter_tenant(txn, "users", tenant):
            yield key.decode(), bytes(value)

    def lookup_item(self, txn, tenant: str, item_id: str) -> int | None:
        raw = txn.get(tkey(tenant, item_id), db=self.db["catalog"])
        return None if raw is None else struct.unpack("<I", bytes(raw))[0]

    # ------------------------------------------------------------------- reads
    def snapshot(self) -> "StoreSnapshot":
        return StoreSnapshot(self)

    def chunk_addresses(self, txn, tenant: str) -> tuple[np.ndarray, int, list]:
        """int64 addresses of every item chunk (0 = missing), n_items and the chunks
        as read-only [CHUNK_ROWS, ITEM_WIDTH] views (None = missing), valid while
        ``items_gen`` is unchanged. Cached per tenant; re-resolved on a new generation."""
        raw = txn.get(tkey(tenant, "items_gen"), db=self.db["state"])
        gen = 0 if raw is None else int(bytes(raw))
        cached = self._chunk_cache.get(tenant)
        if cached is not None and cached[0] == gen:
            return cached[1], cached[2], cached[3]
        n_items = int(self.get_state(txn, tenant, "n_items", 0))
        n_chunks = (n_items + CHUNK_ROWS - 1) >> CHUNK_ROWS_LOG2
        addrs = np.zeros(max(n_chunks, 1), dtype=np.int64)
        blocks: list = [None] * n_chunks
        db = self.db["item_rows"]
        for chunk in range(n_chunks):
            view = txn.get(idx_key(tenant, chunk), db=db)
            if view is not None:
                blocks[chunk] = np.frombuffer(view, dtype=np.float32).reshape(CHUNK_ROWS, ITEM_WIDTH)
                addrs[chunk] = blocks[chunk].ctypes.data
        self._chunk_cache[tenant] = (gen, addrs, n_items, blocks)
        return addrs, n_items, blocks


@dataclass
class StoreSnapshot:
    """One consistent read view (a buffers=True read transaction). Views it hands
    out are valid until :meth:`close`; use it as a context manager."""

    store: LmdbStore
    txn: lmdb.Transaction = field(init=False)

    def __post_init__(self):
        self.txn = self.store.env.begin(buffers=True)

    def __enter__(self) -> "StoreSnapshot":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.txn.abort()

    def user(self, tenant: str, user_id: str):
        """Zero-copy user value (see :func:`user_row_view`) or None for an unknown user."""
        return self.txn.get(tkey(tenant, user_id), db=self.store.db["users"])

    def impressions(self, tenant: str, user_id: str):
        """Zero-copy impression log of a user (see :func:`impressions_since`), None without one."""
        return self.txn.get(tkey(tenant, user_id), db=self.store.db["impressions"])

    def session(self, tenant: str, user_id: str):
        """Zero-copy current session of a user (server.store.sessions), None without one
        (or on a read-only store opened before the db existed)."""
        db = self.store.db.get("sessions")
        return None if db is None else self.txn.get(tkey(tenant, user_id), db=db)

    def item_list(self, tenant: str, name: str) -> np.ndarray:
        raw = self.txn.get(tkey(tenant, name), db=self.store.db["lists"])
        return np.frombuffer(raw, dtype=np.int32) if raw is not None else np.empty(0, dtype=np.int32)

    def item_index(self, tenant: str, item_id: str) -> int | None:
        return self.store.lookup_item(self.txn, tenant, item_id)

    def item_meta(self, tenant: str, index: int) -> dict | None:
        return self.store.get_json(self.txn, "item_meta", idx_key(tenant, index))

    def chunks(self, tenant: str) -> tuple[np.ndarray, int]:
        addrs, n_items, _ = self.store.chunk_addresses(self.txn, tenant)
        return addrs, n_items

    def items_gen(self, tenant: str) -> int:
        """The generation of the tenant's item rows (bumped by every rewrite of an item chunk)."""
        self.store.chunk_addresses(self.txn, tenant)
        return self.store._chunk_cache[tenant][0]

    def catalog_gen(self, tenant: str) -> int:
        """The generation of the tenant's catalog (items added, changed, deactivated or deleted)."""
        raw = self.txn.get(tkey(tenant, "catalog_gen"), db=self.store.db["state"])
        return 0 if raw is None else int(bytes(raw))

    def item_row(self, tenant: str, index: int) -> np.ndarray:
        """Zero-copy view of one item row; IndexError for an index outside the catalog."""
        _, n_items, blocks = self.store.chunk_addresses(self.txn, tenant)
        block = blocks[index >> CHUNK_ROWS_LOG2] if 0 <= index < n_items else None
        if block is None:
            raise IndexError(f"item index {index} is not in the catalog")
        return block[index & (CHUNK_ROWS - 1)]

    def state(self, tenant: str, name: str, default=None):
        return self.store.get_state(self.txn, tenant, name, default)
