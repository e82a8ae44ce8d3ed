"""Model registry: every ranking model a tenant may serve, content-addressed.

A model is registered once per tenant under its version, the sha256 of its ONNX
bytes. The file goes where ``funnel train`` writes models
(``<data dir>/tenants/<tenant>/models/<sha256>.onnx``, server.store.paths), the
metadata to the store's ``models`` db under (tenant, version):
{version, kind, features, uploaded_by, uploaded_at, metrics, size, path}.

Nothing is stored unless the model passes :func:`validate_model`: it loads in ONNX
Runtime, has a single float32 input [N, len(features)] and one output [N] or
[N, 1], every feature name is one the server assembles (kernels.layout.FEATURES,
any subset in the model's own input order), and a probe batch (PROBE_ROWS rows of
plausible feature values, plus zero rows) yields only finite scores. The probe
samples each feature independently within its usual range, so it catches models
that are broken everywhere, not models that break on a rare value real traffic
carries; the canary guardrails (server.models.canary) are the net for those.

Which version serves is the deployment state (server.models.deploy), not this db.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass, field

import numpy as np

from kernels.layout import FEATURES
from server.store.lmdb_store import SEP, tkey
from server.store.paths import DataDir

KINDS = ("prerank", "rank")
MAX_MODEL_BYTES = 64 << 20     # UploadModel answers RESOURCE_EXHAUSTED above this
MAX_METRICS_BYTES = 16 << 10
MIN_PREFIX = 12                # a version may be named by a unique prefix of at least this many hex digits
PROBE_ROWS = 256
# plausible value ranges of the assembled features (the rest are shares or flags in [0, 1])
PROBE_RANGES = {"cf_score": (-1.0, 1.0), "user_activity": (0.0, 5.0)}
PROBE_BINARY = ("from_cf",)


class ModelRejected(ValueError):
    """The model (or its metadata) is not acceptable; the message says why."""


@dataclass(frozen=True)
class ModelRecord:
    version: str                  # sha256 of the ONNX bytes, hex
    kind: str                     # prerank | rank
    features: tuple[str, ...]     # the model's input columns, by name
    uploaded_by: str
    uploaded_at: float            # seconds since the epoch
    metrics: dict = field(default_factory=dict)
    size: int = 0
    path: str = ""                # relative to the data dir

    @property
    def tag(self) -> str:
        """The short version reported in FeedResponse.model_version."""
        return self.version[:12]

    def to_json(self) -> dict:
        d = asdict(self)
        d["features"] = list(self.features)
        return d

    @classmethod
    def from_json(cls, d: dict) -> "ModelRecord":
        return cls(**dict(d, features=tuple(d["features"])))


def model_version(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def probe_batch(features: tuple[str, ...], rows: int = PROBE_ROWS, seed: int = 0) -> np.ndarray:
    """float32 [rows + 8, len(features)]: uniform values within each feature's plausible
    range, then 8 rows of zeros (a cold user with no signals)."""
    rng = np.random.default_rng(seed)
    x = np.zeros((rows + 8, len(features)), dtype=np.float32)
    for j, name in enumerate(features):
        if name in PROBE_BINARY:
            x[:rows, j] = rng.integers(0, 2, rows)
        else:
            lo, hi = PROBE_RANGES.get(name, (0.0, 1.0))
            x[:rows, j] = rng.uniform(lo, hi, rows)
    return x


def check_features(features) -> tuple[str, ...]:
    features = tuple(features)
    if not features:
        raise ModelRejected(f"features: required (names from: {', '.join(FEATURES)})")
    unknown = [name for name in features if name not in FEATURES]
    if unknown:
        raise ModelRejected(f"features: unknown feature(s) {', '.join(map(repr, unknown))}; "
                            f"known: {', '.join(FEATURES)}")
    if len(set(features)) != len(features):
        raise ModelRejected("features: names must be distinct")
    return features


def validate_model(data: bytes, kind: str, features) -> tuple[str, ...]:
    """Raises ModelRejected naming the problem; returns the checked feature schema.
    Loads the model into a throw-away ONNX Runtime session and runs the probe."""
    from server.models.runtime import ModelError, Scorer

    if kind not in KINDS:
        raise ModelRejected(f"kind: {kind!r} is not one of {', '.join(KINDS)}")
    if not data:
        raise ModelRejected("model: no bytes")
    if len(data) > MAX_MODEL_BYTES:
        raise ModelRejected(f"model: {len(data)} bytes is above the limit of {MAX_MODEL_BYTES}")
    features = check_features(features)
    try:
        scorer = Scorer(data, model_version(data)[:12], features)
    except ModelError as exc:
        raise ModelRejected(str(exc)) from None
    probe = probe_batch(features)
    full = np.zeros((probe.shape[0], len(FEATURES)), dtype=np.float32)
    full[:, [FEATURES.index(f) for f in features]] = probe
    try:
        scores, nonfinite = scorer.score_counted(full)
    except ModelError as exc:
        raise ModelRejected(f"probe: {exc}") from None
    if nonfinite:
        raise ModelRejected(f"probe: {nonfinite} of {probe.shape[0]} scores are NaN or infinite "
                            "on plausible feature values")
    return features


def write_content_addressed(path: str, data: bytes) -> None:
    """Writes ``data`` aside, syncs it and renames it to ``path``; an existing file at a
    content-addressed path already holds the same bytes, so it is left alone."""
    if os.path.exists(path):
        return
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class ModelRegistry:
    """Registered models of every tenant, in ``store`` (an LmdbStore of ``data_dir``)."""

    def __init__(self, store, data_dir: str):
        self.store = store
        self.data = DataDir(data_dir)
        self.data_dir = data_dir

    # ------------------------------------------------------------------ writes
    def register(self, tenant: str, kind: str, data: bytes, features=FEATURES, uploaded_by: str = "",
                 metrics: dict | None = None) -> tuple[ModelRecord, bool]:
        """Validate, store the file, record the metadata. Returns (record, created);
        registering the same bytes again returns the first record (created False).
        Raises ModelRejected (nothing stored)."""
        features = validate_model(data, kind, features)
        metrics = dict(metrics or {})
        record = self.new_record(tenant, kind, data, features, uploaded_by or "unknown", metrics)
        self.write_file(tenant, record.version, data)
        with self.store.write() as txn:
            return self.put(txn, tenant, record)

    def new_record(self, tenant: str, kind: str, data: bytes, features, uploaded_by: str,
                   metrics: dict, uploaded_at: float | None = None) -> ModelRecord:
        if len(json.dumps(metrics)) > MAX_METRICS_BYTES:
            raise ModelRejected(f"metrics_json: longer than {MAX_METRICS_BYTES} bytes")
        version = model_version(data)
        path = os.path.relpath(self.data.model(tenant, version), self.data_dir)
        return ModelRecord(version, kind, tuple(features), uploaded_by,
                           time.time() if uploaded_at is None else uploaded_at, metrics, len(data), path)

    def write_file(self, tenant: str, version: str, data: bytes) -> None:
        write_content_addressed(self.data.model(tenant, version), data)

    def put(self, txn, tenant: str, record: ModelRecord) -> tuple[ModelRecord, bool]:
        """Records ``record`` inside a write transaction (train uses its own)."""
        current = self.get(txn, tenant, record.version)
        if current is not None:
            if current.kind != record.kind:
                raise ModelRejected(f"kind: version {record.version[:12]} is registered as a {current.kind} "
                                    f"model, not {record.kind}")
            return current, False
        self.store.put_json(txn, "models", tkey(tenant, record.version), record.to_json())
        return record, True

    # ------------------------------------------------------------------- reads
    def get(self, txn, tenant: str, version: str) -> ModelRecord | None:
        """The record of ``version`` (full sha256 or a unique prefix of at least MIN_PREFIX hex digits)."""
        version = version.strip().lower()
        if len(version) == 64:
            raw = self.store.get_json(txn, "models", tkey(tenant, version))
            return None if raw is None else ModelRecord.from_json(raw)
        if len(version) < MIN_PREFIX or len(version) > 64:
            return None
        found = [r for r in self._scan(txn, tenant, version)]
        return found[0] if len(found) == 1 else None

    def list(self, txn, tenant: str, kind: str = "") -> list[ModelRecord]:
        """Every registered model of the tenant (of ``kind`` if given), newest first."""
        records = [r for r in self._scan(txn, tenant, "") if not kind or r.kind == kind]
        return sorted(records, key=lambda r: (-r.uploaded_at, r.version))

    def _scan(self, txn, tenant: str, prefix: str):
        start = tenant.encode() + SEP + prefix.encode()
        cur = txn.cursor(db=self.store.db["models"])
        if not cur.set_range(start):
            return
        for key, value in cur:
            if not bytes(key).startswith(start):
                break
            yield ModelRecord.from_json(json.loads(bytes(value)))
