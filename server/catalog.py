"""Online catalog changes (Admin.UpsertItems, DeactivateItem, DeleteItem).

An upsert keeps an existing item's dense index and learned columns (CF
embedding, popularity, quality) and rewrites its metadata columns; a new item
gets the next index, joins the end of the "popular" list (so the fallback
levels can serve it) and the "new" list, and is retrieved by CF/content only
after the next `funnel train`. Deactivation flips the ACTIVE column: the very
next request filters the item out, at every degradation level.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from kernels.layout import (
    ITEM_CAMPAIGN,
    ITEM_ACTIVE,
    ITEM_CATEGORY,
    ITEM_CREATED_DAYS,
    ITEM_EDITORIAL,
    ITEM_MATURITY,
    ITEM_QUALITY,
    ITEM_SPONSORED,
    ITEM_WIDTH,
    MATURITY_CODES,
    MATURITY_MOST_RESTRICTIVE,
    MAX_CATEGORIES,
    canonical_maturity,
)
from server.store.lmdb_store import LmdbStore, tkey

MAX_ID_LEN = 256
MAX_TITLE_LEN = 1000
MAX_CAMPAIGN_LEN = 256
NEW_LIST_SIZE = 1000


class ItemError(ValueError):
    pass


def maturity_code(rating: str | None) -> tuple[int, str]:
    """(code, canonical name). "PG-13", "pg 13" -> PG13. Unknown or empty -> the most
    restrictive code (fail closed) with the raw string kept for display."""
    canonical = canonical_maturity(rating)
    if canonical is not None:
        return MATURITY_CODES[canonical], canonical
    return MATURITY_MOST_RESTRICTIVE, (rating or "").strip()


def category_ids(names: list[str], categories: list[str]) -> list[int]:
    """Dense ids for category names, appending new names to ``categories`` (in place);
    beyond MAX_CATEGORIES - 1 distinct names everything maps to the last id, "other"."""
    ids = []
    for name in names:
        if name not in categories:
            if len(categories) < MAX_CATEGORIES - 1:
                categories.append(name)
            else:
                if len(categories) == MAX_CATEGORIES - 1:
                    categories.append("other")
                ids.append(MAX_CATEGORIES - 1)
                continue
        ids.append(categories.index(name))
    return ids


def campaign_ids(names, campaigns: list[str]) -> np.ndarray:
    """Dense campaign ids (1-based; 0 = no campaign, the empty name) for campaign names,
    appending new names to ``campaigns`` (in place; state "campaigns" keeps them)."""
    known = {name: k + 1 for k, name in enumerate(campaigns)}
    out = np.zeros(len(names), dtype=np.int64)
    for pos, name in enumerate(names):
        if name:
            cid = known.get(name)
            if cid is None:
                campaigns.append(name)
                cid = known[name] = len(campaigns)
            out[pos] = cid
    return out


def campaign_lists(campaign_column: np.ndarray, n_campaigns: int) -> dict[str, np.ndarray]:
    """"campaign:<id>" -> int32 item indices with that ITEM_CAMPAIGN, for every id 1..n_campaigns
    (empty lists included, so writing them all replaces stale ones)."""
    ids = campaign_column.astype(np.int64)
    order = np.argsort(ids, kind="stable")
    bounds = np.searchsorted(ids[order], np.arange(1, n_campaigns + 2))
    return {f"campaign:{c}": order[bounds[c - 1]:bounds[c]].astype(np.int32) for c in range(1, n_campaigns + 1)}


@dataclass
class ValidItem:
    tenant_id: str
    item_id: str
    title: str
    categories: list[str]
    maturity: int
    maturity_name: str
    created_ts: int
    active: bool
    sponsored: bool
    editorial: float
    campaign: str = ""


class CatalogWriter:
    def __init__(self, store: LmdbStore):
        self.store = store

    def validate(self, item) -> ValidItem:
        if not item.tenant_id:
            raise ItemError("tenant_id: required")
        if not item.item_id or len(item.item_id) > MAX_ID_LEN:
            raise ItemError(f"item_id: required, at most {MAX_ID_LEN} characters")
        if len(item.title) > MAX_TITLE_LEN:
            raise ItemError(f"title: longer than {MAX_TITLE_LEN} characters")
        if not (0.0 <= item.editorial_boost <= 1.0):
            raise ItemError("editorial_boost: must be within 0..1")
        if item.created_at_s < 0 or item.created_at_s > time.time() + 366 * 86400:
            raise ItemError("created_at_s: must be a Unix time in seconds, not in the far future")
        if len(item.campaign_id) > MAX_CAMPAIGN_LEN:
            raise ItemError(f"campaign_id: longer than {MAX_CAMPAIGN_LEN} characters")
        code, name = maturity_code(item.maturity_rating)
        return ValidItem(item.tenant_id, item.item_id, item.title, [c for c in item.categories if c] or ["other"],
                         code, name, item.created_at_s or int(time.time()), item.active, item.sponsored,
                         item.editorial_boost, item.campaign_id.strip())

    def upsert(self, items: list[ValidItem]) -> tuple[int, int]:
        inserted = updated = 0
        with self.store.write() as txn:
            for tenant_id in dict.fromkeys(i.tenant_id for i in items):
                batch = [i for i in items if i.tenant_id == tenant_id]
                ins, upd = self._upsert_tenant(txn, tenant_id, batch)
                inserted += ins
                updated += upd
        return inserted, updated

    def _upsert_tenant(self, txn, tenant: str, items: list[ValidItem]) -> tuple[int, int]:
        """Touches only the upserted items' chunks and the small lists, never the whole catalog."""
        store = self.store
        n_items = int(store.get_state(txn, tenant, "n_items", 0))
        categories = list(store.get_state(txn, tenant, "categories", []) or [])
        campaigns = list(store.get_state(txn, tenant, "campaigns", []) or [])
        campaign_moves: dict[int, set[int]] = {}  # campaign id -> indices that left (negative) or joined
        touched: dict[int, np.ndarray] = {}
        new_indices: list[int] = []
        for item in items:
            index = store.lookup_item(txn, tenant, item.item_id)  # sees ids added earlier in this batch
            if index is None:
                index = n_items + len(new_indices)
                new_indices.append(index)
                touched[index] = np.zeros(ITEM_WIDTH, dtype=np.float32)
                touched[index][ITEM_QUALITY] = 0.5
            elif index not in touched:
                touched[index] = store.read_rows_at(txn, tenant, [index])[0]
            row = touched[index]
            row[ITEM_ACTIVE] = 1.0 if item.active else 0.0
            row[ITEM_MATURITY] = item.maturity
            row[ITEM_CATEGORY] = category_ids(item.categories[:1], categories)[0]
            row[ITEM_CREATED_DAYS] = item.created_ts / 86400.0
            row[ITEM_EDITORIAL] = item.editorial
            row[ITEM_SPONSORED] = 1.0 if item.sponsored else 0.0
            old_cid, new_cid = int(row[ITEM_CAMPAIGN]), int(campaign_ids([item.campaign], campaigns)[0])
            if old_cid != new_cid:
                if old_cid:
                    campaign_moves.setdefault(old_cid, set()).add(-index - 1)
                if new_cid:
                    campaign_moves.setdefault(new_cid, set()).add(index)
                row[ITEM_CAMPAIGN] = new_cid
            category_ids(item.categories[1:], categories)
            store.put_item_meta(txn, tenant, index, item.item_id, {
                "title": item.title, "category": categories[int(row[ITEM_CATEGORY])],
                "categories": item.categories, "maturity_rating": item.maturity_name,
                "created_ts": item.created_ts, "sponsored": item.sponsored, "editorial_boost": item.editorial,
                **({"campaign": item.campaign} if item.campaign else {})})
        order = np.array(sorted(touched), dtype=np.int64)
        rows = np.stack([touched[int(i)] for i in order])
        store.put_rows_at(txn, tenant, order, rows)
        store.bump_catalog_gen(txn, tenant)
        store.set_state(txn, tenant, "n_items", n_items + len(new_indices))
        store.set_state(txn, tenant, "categories", categories)
        lists = self.store.db["lists"]

        def current(name):
            raw = txn.get(tkey(tenant, name), db=lists)
            return np.frombuffer(raw, dtype=np.int32) if raw is not None else np.empty(0, dtype=np.int32)

        new = np.asarray(new_indices, dtype=np.int32)
        store.put_list(txn, tenant, "popular", np.concatenate([current("popular"), new]))
        candidates = np.unique(np.concatenate([current("new"), new]))
        created = store.read_rows_at(txn, tenant, candidates)[:, ITEM_CREATED_DAYS]
        store.put_list(txn, tenant, "new", candidates[np.argsort(-created, kind="stable")][:NEW_LIST_SIZE])
        sponsored = set(current("sponsored").tolist())
        for index, row in touched.items():
            (sponsored.add if row[ITEM_SPONSORED] == 1.0 else sponsored.discard)(int(index))
        store.put_list(txn, tenant, "sponsored", np.array(sorted(sponsored), dtype=np.int32))
        for cid, moves in campaign_moves.items():
            members = set(current(f"campaign:{cid}").tolist())
            members -= {-m - 1 for m in moves if m < 0}
            members |= {m for m in moves if m >= 0}
            store.put_list(txn, tenant, f"campaign:{cid}", np.array(sorted(members), dtype=np.int32))
        store.set_state(txn, tenant, "campaigns", campaigns)
        return len(new_indices), len(touched) - len(new_indices)

    def deactivate(self, tenant: str, item_id: str, delete: bool = False) -> bool | None:
        """None if the item is unknown; else whether anything changed. Delete also
        drops the id from the catalog (a later upsert of that id is a new item)."""
        with self.store.write() as txn:
            index = self.store.lookup_item(txn, tenant, item_id)
            if index is None:
                return None
            changed = bool(self.store.read_rows_at(txn, tenant, [index])[0, ITEM_ACTIVE] != 0.0)
            if changed:
                self.store.set_item_fields(txn, tenant, np.array([index]), ITEM_ACTIVE, 0.0)
            if delete:
                txn.delete(tkey(tenant, item_id), db=self.store.db["catalog"])
                changed = True
            if changed:
                self.store.bump_catalog_gen(txn, tenant)
            return changed
