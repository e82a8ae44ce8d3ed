"""``funnel load``: import a dataset into a tenant of a data directory.

:func:`load_dataset` parses a dataset directory (see ops.catalog and
ops/FORMATS.md) and :func:`write_dataset` writes a parsed one. All store writes
happen in ONE LMDB write transaction, so readers see either the previous
catalog or the new one, never a mix:

* ``catalog`` / ``item_meta``: every item, meta = {title, category (primary
  category name), categories, maturity_rating (canonical code such as "PG13",
  or the raw string when unrecognised), created_ts, sponsored, editorial_boost};
* ``item_rows``: :func:`ops.features.item_base_rows`;
* ``users``: :func:`ops.features.user_values_from_history` for every user in the history;
* ``lists``: :func:`ops.features.item_lists`;
* ``item_stats``: the history's :func:`ops.features.item_counts` per item with
  any interaction, referenced at ``now_ts`` (replacing the tenant's counters,
  live ones included: the ingest worker adds to them from there);
* ``lists`` also get "campaign:<id>" (the items of each sponsored campaign,
  for frequency caps; ITEM_CAMPAIGN holds the id, state ``campaigns`` the names);
* ``state``: ``n_items``, ``categories`` (names by dense id), ``now_ts``,
  ``catalog_gen`` (bumped), and the scales the ingest worker's roll-up keeps
  using until the next load: ``popularity_max_count``, ``skip_prior``.

Time decay uses the tenant's half-lives (``TenantConfig.half_lives``: user affinity
and the segment lists with the affinity half-life, the trending lists and counters
with the trending one) when the tenant config exists, else the defaults of
``ops.features``; the report names the pair used.

The history (item = store index) is saved to ``DataDir(data_dir).interactions(tenant)``;
it is written to a temporary file first and moved into place after the commit.

Reloading a tenant replaces its catalog. Dense indices are stable: an item id
already in the tenant keeps its index (and its trained CF embedding), new ids
are appended, and items missing from the new catalog keep their index and
metadata but become inactive (ACTIVE = 0), so stored references to them stay
valid. Category names keep their ids. Users in the new history get values
rebuilt from it, except that their consent flag and trained CF embedding are
kept; users absent from the new history are left untouched.

``now_ts`` defaults to the latest interaction timestamp, so a historic dataset
looks current (the wall clock when there is no history).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from kernels.layout import (
    CF_DIM,
    ITEM_ACTIVE,
    ITEM_CAMPAIGN,
    ITEM_CF,
    ITEM_WIDTH,
    STAT_COUNT,
    STAT_SKIPS,
    STAT_T_REF,
    STAT_TREND,
    STAT_WEIGHT_SUM,
    STAT_WIDTH,
    USER_CF,
    USER_CONSENT,
    USER_HAS_CF,
)
from ops.catalog import FORMATS, Dataset, ParseError, normalize_maturity, read_dataset
from ops.features import HalfLives, item_base_rows, item_counts, item_lists, skip_prior, user_values_from_history
from ops.interactions import Interactions
from server.catalog import campaign_ids, campaign_lists
from server.events.erasure import without_erased
from server.store import DataDir, LmdbStore, user_row_view
from server.tenancy import TenantRegistry

_PROGRESS_EVERY = 1 << 14


@dataclass
class LoadReport:
    """What a load did. ``errors`` holds the first parse errors, ``n_errors`` counts all."""

    tenant: str
    fmt: str
    items: int           # items in the loaded catalog
    new_items: int       # of those, ids the tenant did not have (appended)
    retired_items: int   # earlier items absent from this catalog, now inactive
    users: int
    interactions: int
    impressions: int     # valid impression rows, not part of the history
    categories: int
    n_errors: int
    errors: list[ParseError]
    now_ts: int
    seconds: float
    half_lives: HalfLives = HalfLives()  # the decay used (the tenant config's, else the defaults)

    def summary(self, max_errors: int = 50) -> str:
        lines = [
            f"loaded {self.fmt} into tenant {self.tenant!r} in {self.seconds:.1f}s: "
            f"{self.items} items ({self.new_items} new, {self.retired_items} retired), {self.users} users, "
            f"{self.interactions} interactions, {self.impressions} impressions skipped, "
            f"{self.categories} categories, now_ts={self.now_ts}, half-lives: affinity "
            f"{self.half_lives.affinity_days:g}d, trending {self.half_lives.trending_days:g}d",
        ]
        if self.n_errors:
            lines.append(f"{self.n_errors} malformed rows skipped:")
            lines += [f"  {e}" for e in self.errors[:max_errors]]
            if self.n_errors > max_errors:
                lines.append(f"  ... and {self.n_errors - max_errors} more")
        return "\n".join(lines)


def _dense_indices(store: LmdbStore, txn, tenant: str, item_ids: list[str], n_old: int) -> np.ndarray:
    """Store index per catalog position: the existing one for known ids, else appended."""
    out = np.empty(len(item_ids), dtype=np.int64)
    next_index = n_old
    for pos, item_id in enumerate(item_ids):
        index = store.lookup_item(txn, tenant, item_id) if n_old else None
        if index is None:
            index = next_index
            next_index += 1
        out[pos] = index
    return out


def _bar(progress: bool, total: int, desc: str) -> tqdm:
    return tqdm(total=total, desc=desc, unit="", unit_scale=True, disable=not progress)


def write_dataset(data_dir: str, tenant: str, dataset: Dataset, now_ts: int | None = None,
                  progress: bool = True) -> LoadReport:
    """Write a parsed dataset into ``tenant`` (module docstring: what and how)."""
    started = time.perf_counter()
    history = dataset.history
    if now_ts is None:
        now_ts = int(history.ts.max()) if len(history) else int(time.time())
    data = DataDir(data_dir)
    data.ensure(tenant)
    final_path = data.interactions(tenant)
    tmp_path = final_path[:-len(".npz")] + ".tmp.npz"
    store = LmdbStore.open(data_dir)
    try:
        with store.write() as txn:
            half_lives = TenantRegistry(store).half_lives(txn, tenant)
            catalog = dataset.catalog.with_category_order(store.get_state(txn, tenant, "categories", []))
            n_old = int(store.get_state(txn, tenant, "n_items", 0))
            index_of = _dense_indices(store, txn, tenant, catalog.item_ids, n_old)
            n_total = max(n_old, int(index_of.max()) + 1 if len(index_of) else 0)
            history = without_erased(txn, store, tenant, history)  # erased users' data never comes back

            rows = np.zeros((n_total, ITEM_WIDTH), dtype=np.float32)
            if n_old:
                rows[:n_old] = store.read_item_rows(txn, tenant, n_old)
                rows[:n_old, ITEM_ACTIVE] = 0.0  # retired unless the new catalog lists it
            base = item_base_rows(catalog, history, now_ts)
            base[:, ITEM_CF:ITEM_CF + CF_DIM] = rows[index_of, ITEM_CF:ITEM_CF + CF_DIM]
            rows[index_of] = base
            history = Interactions(history.user_ids, history.user, index_of[history.item].astype(np.int32),
                                   history.ts, history.weight)
            campaigns = list(store.get_state(txn, tenant, "campaigns", []) or [])
            rows[index_of, ITEM_CAMPAIGN] = campaign_ids(catalog.campaigns, campaigns)
            values = user_values_from_history(history, rows, now_ts, half_lives.affinity_days)
            lists = item_lists(rows, history, now_ts, half_lives.trending_days, half_lives.affinity_days)
            counts = item_counts(history, n_total, now_ts, half_lives.trending_days)

            store.put_item_rows(txn, tenant, rows)
            store.bump_catalog_gen(txn, tenant)
            _put_item_meta(store, txn, tenant, catalog, index_of, progress)
            _put_item_stats(store, txn, tenant, counts, now_ts)
            _put_users(store, txn, tenant, history.user_ids, values, progress)
            lists.update(campaign_lists(rows[:, ITEM_CAMPAIGN], len(campaigns)))
            for name, indices in lists.items():
                store.put_list(txn, tenant, name, indices)
            store.set_state(txn, tenant, "campaigns", campaigns)
            store.set_state(txn, tenant, "n_items", n_total)
            store.set_state(txn, tenant, "categories", catalog.category_names)
            store.set_state(txn, tenant, "now_ts", now_ts)
            # the scales live popularity and skip rate keep until the next load (ops.features)
            store.set_state(txn, tenant, "popularity_max_count", float(counts.count.max()) if n_total else 0.0)
            store.set_state(txn, tenant, "skip_prior", skip_prior(counts))
            history.save(tmp_path)
        os.replace(tmp_path, final_path)
    finally:
        if os.path.exists(tmp_path):
            os.remove(tmp_path)
        store.close()

    new_items = int((index_of >= n_old).sum())
    return LoadReport(
        tenant=tenant, fmt=dataset.fmt, items=len(catalog), new_items=new_items,
        retired_items=n_old - (len(catalog) - new_items),
        users=history.n_users, interactions=len(history), impressions=dataset.impressions,
        categories=len(catalog.category_names), n_errors=dataset.n_errors, errors=dataset.errors,
        now_ts=now_ts, seconds=time.perf_counter() - started, half_lives=half_lives)


def _put_item_stats(store: LmdbStore, txn, tenant: str, counts, now_ts: int) -> None:
    """Replaces the tenant's item counters (db item_stats) with the history's, referenced
    at ``now_ts``; the ingest worker adds live events to them."""
    store.clear_item_stats(txn, tenant)
    stats = np.zeros(STAT_WIDTH, dtype=np.float64)
    for index in np.flatnonzero(counts.count).tolist():
        stats[STAT_T_REF] = now_ts
        stats[STAT_COUNT] = counts.count[index]
        stats[STAT_WEIGHT_SUM] = counts.weight_sum[index]
        stats[STAT_SKIPS] = counts.skips[index]
        stats[STAT_TREND] = counts.trend[index]
        store.put_item_stats(txn, tenant, index, stats)


def _put_item_meta(store: LmdbStore, txn, tenant: str, catalog, index_of: np.ndarray, progress: bool) -> None:
    names = catalog.category_names
    primary = catalog.primary_category.tolist()
    created = catalog.created_ts.tolist()
    sponsored = catalog.sponsored.tolist()
    editorial = catalog.editorial.tolist()
    indices = index_of.tolist()
    with _bar(progress, len(catalog), "write items") as bar:
        for pos, item_id in enumerate(catalog.item_ids):
            raw = catalog.maturity[pos]
            store.put_item_meta(txn, tenant, indices[pos], item_id, {
                "title": catalog.titles[pos],
                "category": names[primary[pos]],
                "categories": catalog.categories[pos],
                "maturity_rating": normalize_maturity(raw) or raw,
                "created_ts": created[pos],
                "sponsored": sponsored[pos],
                "editorial_boost": editorial[pos],
                **({"campaign": catalog.campaigns[pos]} if catalog.campaigns[pos] else {}),
            })
            if pos % _PROGRESS_EVERY == _PROGRESS_EVERY - 1:
                bar.update(_PROGRESS_EVERY)
        bar.update(len(catalog) % _PROGRESS_EVERY)


def _put_users(store: LmdbStore, txn, tenant: str, user_ids: np.ndarray, values: list[bytearray],
               progress: bool) -> None:
    with _bar(progress, len(values), "write users") as bar:
        for u, user_id in enumerate(user_ids.tolist()):
            value = values[u]
            old = store.get_user_copy(txn, tenant, user_id)
            if old is not None:
                # a reload must not re-enable personalisation or drop a trained embedding
                new_row, old_row = user_row_view(value), user_row_view(old)
                new_row[USER_CONSENT] = old_row[USER_CONSENT]
                new_row[USER_HAS_CF] = old_row[USER_HAS_CF]
                new_row[USER_CF:USER_CF + CF_DIM] = old_row[USER_CF:USER_CF + CF_DIM]
            store.put_user(txn, tenant, user_id, value)
            if u % _PROGRESS_EVERY == _PROGRESS_EVERY - 1:
                bar.update(_PROGRESS_EVERY)
        bar.update(len(values) % _PROGRESS_EVERY)


def load_dataset(data_dir: str, tenant: str, path: str, fmt: str = "auto", now_ts: int | None = None,
                 progress: bool = True) -> LoadReport:
    """Parse the dataset directory ``path`` (``fmt``: "auto" or one of ops.catalog.FORMATS)
    and write it into ``tenant`` of ``data_dir``. Malformed rows are skipped and
    reported in the returned report; ``seconds`` covers parsing and writing."""
    started = time.perf_counter()
    dataset = read_dataset(path, fmt, progress)
    report = write_dataset(data_dir, tenant, dataset, now_ts, progress)
    _build_named_segment_lists(data_dir, tenant)
    return dataclasses.replace(report, seconds=time.perf_counter() - started)


def _build_named_segment_lists(data_dir: str, tenant: str) -> None:
    """The tenant's named segments (if it exists and has any) get fresh level-3 lists
    from the history just loaded and the user rows just written (ops.segments)."""
    from ops.segments import build_segment_lists

    store = LmdbStore.open(data_dir, readonly=True)
    try:
        with store.snapshot() as snap:
            config = TenantRegistry(store).get(snap.txn, tenant)
    finally:
        store.close()
    if config is not None and config.segments:
        build_segment_lists(data_dir, tenant)


def main(argv: list[str] | None = None) -> int:
    """CLI: ``python -m ops.load --data-dir D --tenant T PATH``; prints the report."""
    parser = argparse.ArgumentParser(prog="funnel load", description="Import a dataset into a tenant.")
    parser.add_argument("path", help="dataset directory")
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--tenant", required=True)
    parser.add_argument("--format", default="auto", choices=("auto",) + FORMATS)
    parser.add_argument("--now-ts", type=int, default=None, help="'now' in epoch seconds (default: latest event)")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    try:
        report = load_dataset(args.data_dir, args.tenant, args.path, args.format, args.now_ts,
                              progress=not args.no_progress)
    except (ValueError, FileNotFoundError) as e:
        print(f"funnel load: {e}", file=sys.stderr)
        return 2
    print(report.summary())
    return 0


if __name__ == "__main__":
    sys.exit(main())
