"""Content vectors from item metadata, for the "content" ANN index (metric cos).

Each item becomes a bag of tokens: its category names (multi-hot), the words of
its title (lower-cased, the trailing "(year)" removed) and the decade of its
creation time. Tokens are hashed (CRC-32, stable across processes) into
HASH_BUCKETS columns, weighted by TF-IDF (binary tf, smoothed idf, rows
L2-normalised), reduced to ``dim`` dimensions by a randomized SVD (Halko,
Martinsson & Tropp 2011) in plain NumPy, and L2-normalised again. Row i is the
vector of the item with dense index i; an item without tokens gets zeros.
"""

from __future__ import annotations

import re
import zlib
from datetime import datetime, timezone
from typing import Sequence

import numpy as np

from kernels.layout import CF_DIM

HASH_BUCKETS = 1 << 20
OVERSAMPLE = 10
POWER_ITERATIONS = 3
_WORD = re.compile(r"[^\W_]+", re.UNICODE)
_TRAILING_YEAR = re.compile(r"\(\d{4}[^)]*\)\s*$")


def item_tokens(title: str, categories: Sequence[str], created_ts: int | None) -> set[str]:
    """The token bag of one item (see the module docstring)."""
    tokens = {"c:" + c.strip().lower() for c in categories if c and c.strip()}
    tokens.update("t:" + w for w in _WORD.findall(_TRAILING_YEAR.sub("", title or "").lower()))
    if created_ts is not None:
        year = datetime.fromtimestamp(int(created_ts), tz=timezone.utc).year
        tokens.add(f"d:{year // 10 * 10}")
    return tokens


def _hashed_matrix(token_sets: Sequence[set[str]]) -> tuple[np.ndarray, np.ndarray, int]:
    """COO (rows, dense column ids) of the binary item x token matrix and its column count."""
    rows, cols = [], []
    for i, tokens in enumerate(token_sets):
        hashed = {zlib.crc32(t.encode()) % HASH_BUCKETS for t in tokens}
        rows.extend([i] * len(hashed))
        cols.extend(hashed)
    rows = np.asarray(rows, dtype=np.int64)
    used, cols = np.unique(np.asarray(cols, dtype=np.int64), return_inverse=True)
    return rows, cols.astype(np.int64), int(used.size)


class _Sparse:
    """A COO matrix with the two products the randomized SVD needs."""

    def __init__(self, rows, cols, vals, shape):
        self.rows, self.cols, self.vals, self.shape = rows, cols, vals, shape

    def matmul(self, m: np.ndarray) -> np.ndarray:        # self @ m
        out = np.empty((self.shape[0], m.shape[1]))
        for j in range(m.shape[1]):
            out[:, j] = np.bincount(self.rows, weights=self.vals * m[self.cols, j], minlength=self.shape[0])
        return out

    def rmatmul(self, m: np.ndarray) -> np.ndarray:       # self.T @ m
        out = np.empty((self.shape[1], m.shape[1]))
        for j in range(m.shape[1]):
            out[:, j] = np.bincount(self.cols, weights=self.vals * m[self.rows, j], minlength=self.shape[1])
        return out


def _randomized_svd(x: _Sparse, rank: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(U[:, :rank], S[:rank]) of x's truncated SVD."""
    rng = np.random.default_rng(seed)
    width = min(rank + OVERSAMPLE, min(x.shape))
    q, _ = np.linalg.qr(x.matmul(rng.standard_normal((x.shape[1], width))))
    for _ in range(POWER_ITERATIONS):
        z, _ = np.linalg.qr(x.rmatmul(q))
        q, _ = np.linalg.qr(x.matmul(z))
    b = x.rmatmul(q).T                                     # q.T @ x, [width, n_cols]
    ub, s, _ = np.linalg.svd(b, full_matrices=False)
    return (q @ ub)[:, :rank], s[:rank]


def content_vectors(titles: Sequence[str], categories: Sequence[Sequence[str]],
                    created_ts: Sequence[int | None], dim: int = CF_DIM, seed: int = 0) -> np.ndarray:
    """float32[n, dim] unit-length content vectors (zeros for an item without tokens);
    deterministic for a given seed. Fewer than ``dim`` distinct token columns or
    items leave the trailing dimensions zero."""
    n = len(titles)
    if not (len(categories) == len(created_ts) == n):
        raise ValueError("titles, categories and created_ts must have the same length")
    out = np.zeros((n, dim), dtype=np.float32)
    rows, cols, n_cols = _hashed_matrix([item_tokens(t, c, ts) for t, c, ts in zip(titles, categories, created_ts)])
    if rows.size == 0:
        return out
    df = np.bincount(cols, minlength=n_cols)
    idf = np.log((1.0 + n) / (1.0 + df)) + 1.0
    vals = idf[cols]
    norms = np.sqrt(np.bincount(rows, weights=vals * vals, minlength=n))
    vals = vals / norms[rows]
    rank = min(dim, n, n_cols)
    u, s = _randomized_svd(_Sparse(rows, cols, vals, (n, n_cols)), rank, seed)
    emb = u * s
    emb[norms == 0] = 0.0  # a rank-deficient QR can leave noise on token-less rows
    # SVD signs are arbitrary; fix them so the same data always gives the same vectors
    emb *= np.where(emb[np.abs(emb).argmax(axis=0), np.arange(rank)] < 0, -1.0, 1.0)
    length = np.linalg.norm(emb, axis=1, keepdims=True)
    out[:, :rank] = np.divide(emb, length, out=np.zeros_like(emb), where=length > 0)
    return out
