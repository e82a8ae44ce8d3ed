"""Layout of a Funnel data directory.

    <root>/store/                          LMDB environment (server.store.lmdb_store)
    <root>/tenants/<tenant>/interactions.npz   imported history (training input)
    <root>/tenants/<tenant>/indexes/<name>.<version>.usearch   ANN indices, never overwritten
    <root>/tenants/<tenant>/models/<sha256>.onnx               ranking models, content-addressed

The active index and model versions are pointers in the store's ``state`` db, so
a rebuilt index or a new model is written to a new file first and switched to in
one LMDB transaction (atomic swap; open readers keep their mapped file).
"""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class DataDir:
    root: str

    @property
    def store(self) -> str:
        return os.path.join(self.root, "store")

    def tenant(self, tenant: str) -> str:
        return os.path.join(self.root, "tenants", tenant)

    def interactions(self, tenant: str) -> str:
        return os.path.join(self.tenant(tenant), "interactions.npz")

    def index(self, tenant: str, name: str, version: str) -> str:
        return os.path.join(self.tenant(tenant), "indexes", f"{name}.{version}.usearch")

    def model(self, tenant: str, sha256: str) -> str:
        return os.path.join(self.tenant(tenant), "models", f"{sha256}.onnx")

    def ensure(self, tenant: str | None = None) -> None:
        os.makedirs(self.store, exist_ok=True)
        if tenant:
            for sub in ("indexes", "models"):
                os.makedirs(os.path.join(self.tenant(tenant), sub), exist_ok=True)
