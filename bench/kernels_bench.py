"""Per-call latency of the kernels, NumPy reference vs compiled, on a random catalog.

    python -m bench.kernels_bench [--n-items 1000000] [--candidates 1000] [--repeat 50]

Each repeat draws a fresh candidate set (uniform over the catalog, so rows come
from all over the item chunks as they do in serving) and times one call of each
kernel; p50/p99 are over the repeats, in microseconds. Needs the compiled kernels
(``python setup.py build_ext --inplace``).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from kernels._diversity import diversify
from kernels._features import assemble_features
from kernels._filters import hard_filter
from kernels.diversity import diversify_reference
from kernels.features import assemble_features_reference
from kernels.filters import hard_filter_reference
from kernels.layout import (
    CF_DIM,
    CHUNK_ROWS,
    ITEM_ACTIVE,
    ITEM_CATEGORY,
    ITEM_CF,
    ITEM_CREATED_DAYS,
    ITEM_MATURITY,
    ITEM_WIDTH,
    MATURITY_CODES,
    MAX_CATEGORIES,
    N_FEATURES,
    N_SOURCE_SIGNALS,
    SEEN_CAP,
    USER_CF,
    USER_HAS_CF,
    USER_WIDTH,
)


def make_catalog(n_items: int, rng: np.random.Generator) -> tuple[list[np.ndarray], np.ndarray]:
    """Random item chunks (kept alive by the returned list) and their addresses."""
    chunks = []
    for lo in range(0, max(n_items, 1), CHUNK_ROWS):
        block = rng.random((CHUNK_ROWS, ITEM_WIDTH), dtype=np.float32)
        block[:, ITEM_ACTIVE] = rng.random(CHUNK_ROWS) < 0.97
        block[:, ITEM_MATURITY] = rng.integers(0, 5, CHUNK_ROWS)
        block[:, ITEM_CATEGORY] = rng.integers(0, MAX_CATEGORIES, CHUNK_ROWS)
        block[:, ITEM_CREATED_DAYS] = rng.uniform(19000, 20000, CHUNK_ROWS)
        block[:, ITEM_CF:ITEM_CF + CF_DIM] = rng.standard_normal((CHUNK_ROWS, CF_DIM), dtype=np.float32)
        block[n_items - lo:] = 0.0  # rows past the catalog, as the store leaves them
        chunks.append(block)
    return chunks, np.array([c.ctypes.data for c in chunks], dtype=np.int64)


def timed(fn, *args) -> float:
    start = time.perf_counter_ns()
    fn(*args)
    return (time.perf_counter_ns() - start) / 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-items", type=int, default=1_000_000)
    parser.add_argument("--candidates", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    n, n_items = args.candidates, args.n_items

    chunks, addrs = make_catalog(n_items, rng)
    user_row = rng.random(USER_WIDTH, dtype=np.float32)
    user_row[USER_HAS_CF] = 1.0
    user_row[USER_CF:USER_CF + CF_DIM] = rng.standard_normal(CF_DIM, dtype=np.float32)
    affinity = rng.random(MAX_CATEGORIES, dtype=np.float32)
    affinity /= affinity.sum()
    signals = rng.random((n, N_SOURCE_SIGNALS), dtype=np.float32)
    out = np.empty((n, N_FEATURES), dtype=np.float32)
    categories = np.empty(n, dtype=np.int32)
    reasons = np.empty(n, dtype=np.uint8)
    max_maturity, blocked = MATURITY_CODES["R"], (1 << 3) | (1 << 17)

    kernels = {
        "hard_filter": (hard_filter_reference, hard_filter),
        "assemble_features": (assemble_features_reference, assemble_features),
        "diversify": (diversify_reference, diversify),
    }
    times = {(name, impl): [] for name in kernels for impl in ("reference", "native")}
    for rep in range(args.repeat + 1):  # repeat 0 warms up and is not recorded
        idx = rng.integers(0, n_items, n, dtype=np.int64)
        deny_idx = np.sort(rng.integers(0, n_items, SEEN_CAP, dtype=np.int64))
        deny_reason = np.full(SEEN_CAP, 6, dtype=np.uint8)
        order = np.argsort(-rng.random(n)).astype(np.int64)
        calls = {
            "hard_filter": (idx, addrs, n_items, ITEM_WIDTH, max_maturity, blocked, deny_idx, deny_reason, reasons),
            "assemble_features": (idx, addrs, ITEM_WIDTH, user_row, affinity, signals, 20000.0, 30.0, out, categories),
            "diversify": (order, categories, n // 10, 3, 2),
        }
        for name, (reference, native) in kernels.items():
            for impl, fn in (("reference", reference), ("native", native)):
                elapsed = timed(fn, *calls[name])
                if rep:
                    times[name, impl].append(elapsed)

    print(f"n_items={n_items} candidates={n} repeat={args.repeat} (per call, microseconds)")
    print(f"{'kernel':<18} {'impl':<10} {'p50':>10} {'p99':>10} {'speedup p50':>12}")
    for name in kernels:
        ref_p50 = float(np.percentile(times[name, "reference"], 50))
        for impl in ("reference", "native"):
            p50, p99 = np.percentile(times[name, impl], [50, 99])
            print(f"{name:<18} {impl:<10} {p50:>10.1f} {p99:>10.1f} {ref_p50 / p50:>11.1f}x")


if __name__ == "__main__":
    main()
