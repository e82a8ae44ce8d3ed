"""Synthetic catalogs and interaction histories for benchmarks.

The generator is deterministic for a given seed and vectorised (only the id,
title and category-list strings are built in Python loops):

* categories have Zipf-like sizes (category c gets weight 1 / (c + 1));
* each category splits into 8 taste clusters; an item's latent vector is its
  category centroid + its cluster offset + noise, so CF has structure to find;
* item popularity is Zipf-like (weight 1 / rank**0.9, ranks shuffled);
* each user has 1-3 favourite (category, cluster) pairs, a latent vector near
  them and a log-normal activity level; every user has at least one event when
  ``n_events >= n_users``;
* an event picks the user, then with p=.6 one of their favourite clusters, p=.25
  a random cluster of a favourite category, else a random category; the item is
  drawn by popularity inside that cluster; the event type (and so the weight,
  ops.catalog.EVENT_WEIGHTS) depends on how well the item matches the user's taste;
* timestamps span the 90 days before 2024-06-01, denser toward the end.

CLI::

    python -m bench.synth --items 1000000 --users 200000 --events 5000000 --out DIR
    python -m bench.synth --items 1000000 --users 200000 --events 5000000 --data-dir D --tenant T

``--out`` writes the canonical format (items.jsonl, events.csv; ops/FORMATS.md);
``--data-dir`` skips text files and writes straight into the store through
ops.load.write_dataset.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass

import numpy as np

from ops.catalog import EVENT_WEIGHTS, Catalog, Dataset
from ops.interactions import Interactions
from ops.load import write_dataset

END_TS = 1_717_200_000  # 2024-06-01T00:00:00Z
HISTORY_DAYS = 90
DAY = 86400
CLUSTERS_PER_CATEGORY = 8
GENRES = ("Drama", "Comedy", "Action", "Thriller", "Romance", "Documentary", "Horror", "Crime", "Family",
          "Animation", "Sci-Fi", "Fantasy", "Adventure", "Mystery", "Music", "Sport", "History", "War",
          "Western", "Biography", "News", "Kids", "Cooking", "Travel", "Gaming", "Tech", "Science", "Nature",
          "Fashion", "Fitness", "Finance", "Politics", "Art", "Design", "Auto", "Pets", "Health", "Education",
          "Comics", "Anime")
MATURITY = ("G", "PG", "PG13", "R", "NC17")
MATURITY_P = (0.15, 0.30, 0.30, 0.20, 0.05)
EVENT_TYPES = ("view", "click", "like", "share", "purchase", "skip")
# event-type probabilities by match level: favourite cluster, favourite category, exploration
EVENT_P = np.array([
    [0.20, 0.40, 0.22, 0.05, 0.08, 0.05],
    [0.35, 0.35, 0.08, 0.02, 0.03, 0.17],
    [0.40, 0.15, 0.02, 0.01, 0.01, 0.41],
])


@dataclass
class Synthetic:
    """A generated dataset plus the latent factors that generated it (unit norm)."""

    catalog: Catalog
    history: Interactions   # item = catalog position, sorted by ts
    event_type: np.ndarray  # int8[n_events] index into EVENT_TYPES, aligned with history rows
    item_vectors: np.ndarray  # float32[n_items, dim]
    user_vectors: np.ndarray  # float32[n_users, dim]

    def dataset(self) -> Dataset:
        return Dataset(self.catalog, self.history, [], 0, "synthetic")


def category_name(c: int) -> str:
    return GENRES[c] if c < len(GENRES) else f"Category {c}"


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def generate(n_items: int, n_users: int, n_events: int, n_categories: int = 40, dim: int = 32,
             seed: int = 0) -> Synthetic:
    """A synthetic catalog of ``n_items`` and ``n_events`` interactions by ``n_users`` users."""
    rng = np.random.default_rng(seed)
    n_cat, n_sub = n_categories, CLUSTERS_PER_CATEGORY

    cat_p = 1.0 / np.arange(1, n_cat + 1)
    cat_p /= cat_p.sum()
    item_cat = rng.choice(n_cat, n_items, p=cat_p)
    item_sub = rng.integers(0, n_sub, n_items)
    centroids = rng.normal(size=(n_cat, dim))
    offsets = 0.6 * rng.normal(size=(n_cat, n_sub, dim))
    item_vec = _unit(centroids[item_cat] + offsets[item_cat, item_sub]
                     + 0.35 * rng.standard_normal((n_items, dim), dtype=np.float32))
    popularity = 1.0 / (rng.permutation(n_items) + 1.0) ** 0.9

    # items grouped by (category, cluster) with cumulative popularity, for sampling inside a group
    group = item_cat * n_sub + item_sub
    by_group = np.argsort(group, kind="stable")
    cum = np.cumsum(popularity[by_group])
    group_end = np.searchsorted(group[by_group], np.arange(n_cat * n_sub), side="right")
    group_start = np.r_[0, group_end[:-1]]
    cum0 = np.r_[0.0, cum]

    n_fav = rng.integers(1, 4, n_users)
    fav_cat = rng.choice(n_cat, (n_users, 3), p=cat_p)
    fav_sub = rng.integers(0, n_sub, (n_users, 3))
    fav_mask = np.arange(3) < n_fav[:, None]
    taste = (centroids[fav_cat] + offsets[fav_cat, fav_sub]) * fav_mask[..., None]
    user_vec = _unit(taste.sum(axis=1) / n_fav[:, None] + 0.3 * rng.normal(size=(n_users, dim)))
    activity = rng.lognormal(0.0, 1.0, n_users)

    first = min(n_users, n_events)
    ev_user = np.concatenate([rng.permutation(n_users)[:first],
                              rng.choice(n_users, n_events - first, p=activity / activity.sum())])
    slot = (rng.random(n_events) * n_fav[ev_user]).astype(np.int64)
    r = rng.random(n_events)
    level = np.where(r < 0.6, 0, np.where(r < 0.85, 1, 2))
    ev_cat = np.where(level < 2, fav_cat[ev_user, slot], rng.choice(n_cat, n_events, p=cat_p))
    ev_sub = np.where(level == 0, fav_sub[ev_user, slot], rng.integers(0, n_sub, n_events))
    g = ev_cat * n_sub + ev_sub
    lo, hi = group_start[g], group_end[g]
    empty = lo == hi  # small catalogs: a cluster may have no items; draw from the whole catalog
    lo, hi = np.where(empty, 0, lo), np.where(empty, n_items, hi)
    target = cum0[lo] + rng.random(n_events) * (cum0[hi] - cum0[lo])
    pos = np.clip(np.searchsorted(cum, target, side="right"), lo, hi - 1)
    ev_item = by_group[pos]
    level[empty] = 2

    ev_type = np.empty(n_events, dtype=np.int8)
    for lv in range(3):
        sel = level == lv
        ev_type[sel] = rng.choice(len(EVENT_TYPES), int(sel.sum()), p=EVENT_P[lv])
    weights = np.array([EVENT_WEIGHTS[t] for t in EVENT_TYPES], dtype=np.float32)
    ts = END_TS - (rng.random(n_events) ** 1.5 * HISTORY_DAYS * DAY).astype(np.int64)
    order = np.argsort(ts, kind="stable")

    primary = [category_name(c) for c in range(n_cat)]
    second = np.where(rng.random(n_items) < 0.3, rng.integers(0, n_cat, n_items), -1)
    catalog = Catalog(
        item_ids=[f"i{i:07d}" for i in range(n_items)],
        titles=[f"Item {i}" for i in range(n_items)],
        categories=[[primary[c]] if s < 0 or s == c else [primary[c], primary[s]]
                    for c, s in zip(item_cat.tolist(), second.tolist())],
        maturity=[MATURITY[m] for m in rng.choice(len(MATURITY), n_items, p=MATURITY_P).tolist()],
        created_ts=END_TS - np.minimum(rng.exponential(400 * DAY, n_items), 10 * 365 * DAY).astype(np.int64),
        active=rng.random(n_items) >= 0.01,
        sponsored=rng.random(n_items) < 0.02,
        editorial=np.where(rng.random(n_items) < 0.05, rng.random(n_items), 0.0).astype(np.float32),
    )
    history = Interactions(
        user_ids=np.array([f"u{j:07d}" for j in range(n_users)]),
        user=ev_user[order].astype(np.int32),
        item=ev_item[order].astype(np.int32),
        ts=ts[order],
        weight=weights[ev_type[order]],
    )
    return Synthetic(catalog, history, ev_type[order], item_vec, user_vec)


def write_canonical(synth: Synthetic, out_dir: str) -> None:
    """Write items.jsonl and events.csv (canonical format) into ``out_dir``."""
    os.makedirs(out_dir, exist_ok=True)
    cat = synth.catalog
    created = cat.created_ts.tolist()
    active, sponsored, editorial = cat.active.tolist(), cat.sponsored.tolist(), cat.editorial.tolist()
    with open(os.path.join(out_dir, "items.jsonl"), "w", encoding="utf-8") as f:
        for i, item_id in enumerate(cat.item_ids):
            f.write(json.dumps({
                "item_id": item_id, "title": cat.titles[i], "categories": cat.categories[i],
                "maturity_rating": cat.maturity[i], "created_at": created[i], "active": active[i],
                "sponsored": sponsored[i], "editorial_boost": round(editorial[i], 4),
            }) + "\n")
    h = synth.history
    users, items = h.user_ids.tolist(), cat.item_ids
    with open(os.path.join(out_dir, "events.csv"), "w", encoding="utf-8") as f:
        f.write("user_id,item_id,type,timestamp_ms\n")
        step = 1 << 16
        for s in range(0, len(h), step):
            f.write("".join(f"{users[u]},{items[i]},{EVENT_TYPES[t]},{ms}\n" for u, i, t, ms in zip(
                h.user[s:s + step].tolist(), h.item[s:s + step].tolist(),
                synth.event_type[s:s + step].tolist(), (h.ts[s:s + step] * 1000).tolist())))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.synth", description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, required=True)
    parser.add_argument("--users", type=int, required=True)
    parser.add_argument("--events", type=int, required=True)
    parser.add_argument("--categories", type=int, default=40)
    parser.add_argument("--dim", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    dest = parser.add_mutually_exclusive_group(required=True)
    dest.add_argument("--out", help="write canonical items.jsonl + events.csv here")
    dest.add_argument("--data-dir", help="load straight into this data directory")
    parser.add_argument("--tenant", help="tenant for --data-dir")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    if args.data_dir and not args.tenant:
        parser.error("--data-dir needs --tenant")

    t0 = time.perf_counter()
    synth = generate(args.items, args.users, args.events, args.categories, args.dim, args.seed)
    t1 = time.perf_counter()
    print(f"generated {args.items} items, {args.users} users, {args.events} events in {t1 - t0:.1f}s")
    if args.out:
        write_canonical(synth, args.out)
        print(f"wrote {args.out}/items.jsonl and events.csv in {time.perf_counter() - t1:.1f}s")
    else:
        report = write_dataset(args.data_dir, args.tenant, synth.dataset(), progress=not args.no_progress)
        print(report.summary())
    print(f"total {time.perf_counter() - t0:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
