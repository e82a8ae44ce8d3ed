"""Fixtures for the kernel tests: item catalogs in real float32 chunks, and the
native kernels to compare against their references.

Under FUNNEL_PURE_PYTHON the compiled modules may be absent, so ``native``
hands out the public functions (which then are the references). Without it,
``native`` imports ``kernels._*`` directly: a missing build fails the tests.
"""

from __future__ import annotations

import importlib
import types

import numpy as np
import pytest

from kernels._backend import PURE_PYTHON
from kernels.layout import CHUNK_ROWS, CHUNK_ROWS_LOG2, ITEM_WIDTH


class Catalog:
    """``n_items`` item rows in CHUNK_ROWS x ITEM_WIDTH float32 chunks, as the store
    keeps them. ``addrs`` holds the chunk addresses (0 for a chunk in ``missing``);
    the arrays live as long as the catalog."""

    def __init__(self, n_items: int, missing=(), n_chunks: int | None = None):
        if n_chunks is None:
            n_chunks = max(-(-n_items // CHUNK_ROWS), 1)
        self.n_items = n_items
        self.chunks = [np.zeros((CHUNK_ROWS, ITEM_WIDTH), dtype=np.float32) for _ in range(n_chunks)]
        self.addrs = np.array([0 if c in missing else block.ctypes.data for c, block in enumerate(self.chunks)],
                              dtype=np.int64)

    def row(self, index: int) -> np.ndarray:
        """Writable view of one item row."""
        return self.chunks[index >> CHUNK_ROWS_LOG2][index & (CHUNK_ROWS - 1)]


@pytest.fixture(scope="session")
def catalog():
    """The Catalog class (session scoped so Hypothesis tests may use it)."""
    return Catalog


@pytest.fixture(scope="session")
def native():
    """hard_filter, assemble_features and diversify from the compiled modules."""
    def load(module: str, name: str):
        return getattr(importlib.import_module(f"kernels.{'' if PURE_PYTHON else '_'}{module}"), name)

    return types.SimpleNamespace(
        hard_filter=load("filters", "hard_filter"),
        assemble_features=load("features", "assemble_features"),
        diversify=load("diversity", "diversify"),
    )
