"""Per-tenant serving resources, resolved once and refreshed when they change.

A TenantRuntime holds what a request needs beyond the store snapshot: the
validated config, resolved blocked/boosted item indices, the category mask,
the memory-mapped ANN index views and the loaded ONNX scorers. The registry
re-reads the tenant's config version and its index/model pointers at most every
``refresh_s`` seconds, and builds a new runtime only when one of them changed;
requests in flight keep the runtime object they started with.

Last known good: when the stored config cannot be read or built (unparseable or
invalid JSON written around the Admin API, a read error), a process that already
serves the tenant keeps serving its current runtime, logs the error once per
distinct failure, counts ``funnel_config_load_failures_total`` and tries again at
the next refresh. Only a process that never had a good runtime for the tenant fails
the request (INTERNAL).
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from indexes.ann import open_index
from kernels.layout import MAX_CATEGORIES
from server.models.canary import CanaryMonitor
from server.models.runtime import ModelError, Scorer, load_scorer
from server.models.selection import BUCKETS, KindModels, ModelChoice, SurfaceModels
from server.experiments import ExperimentPlan
from server.segments import SegmentPlan
from server.tenancy import TenantConfig

log = logging.getLogger("funnel.runtime")
INDEX_NAMES = ("cf", "content")
MODEL_NAMES = ("prerank", "rank")
DEFAULT_RECENCY_HALF_LIFE_DAYS = 365.0


@dataclass
class TenantRuntime:
    tenant_id: str
    config: TenantConfig
    fingerprint: tuple
    categories: list[str] = field(default_factory=list)
    blocked_idx: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))
    boosted_idx: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))
    blocked_category_mask: int = 0
    indexes: dict = field(default_factory=dict)
    prerank: Scorer | None = None
    rank: Scorer | None = None
    model_errors: dict = field(default_factory=dict)
    clock_ts: float | None = None       # pinned "now" for tenants loaded from historic data
    recency_half_life_days: float = DEFAULT_RECENCY_HALF_LIFE_DAYS
    # per surface: rules and running experiment, compiled from the config (server.experiments)
    experiments: ExperimentPlan = field(init=False)
    # named segments and their per-surface eligibility (server.segments); rebuilt with the
    # category names and item indices by RuntimeRegistry._build
    segments: SegmentPlan = field(init=False)
    # per surface with a deployment ("*" for the rest): stable/canary scorers (server.models.selection)
    surface_models: dict = field(default_factory=dict)
    override_models: dict = field(default_factory=dict)  # experiment model_version -> registered rank Scorer

    def __post_init__(self):
        self.experiments = ExperimentPlan(self.config)
        self.segments = SegmentPlan(self.config, self.categories)

    def index(self, name: str):
        return self.indexes.get(name)

    def now_days(self) -> float:
        return (self.clock_ts if self.clock_ts is not None else time.time()) / 86400.0

    @property
    def model_version(self) -> str:
        parts = [s.version for s in (self.prerank, self.rank) if s is not None]
        return "+".join(parts)

    def models_for(self, surface: str, user_id: str, override: str = "") -> ModelChoice:
        """The scorers of one request: the surface's deployment (canary or stable by
        hash(deploy salt, user_id)), with the rank model replaced by ``override`` (an
        experiment variant's registered rank version) when that loaded. O(1)."""
        models = self.surface_models.get(surface) or self.surface_models["*"]
        return models.choose(user_id, self.override_models.get(override) if override else None)

    def category_name(self, category_id: int) -> str:
        return self.categories[category_id] if 0 <= category_id < len(self.categories) else ""


class RuntimeRegistry:
    def __init__(self, store, data_dir: str, refresh_s: float = 0.5, metrics=None):
        self.store = store
        self.data_dir = data_dir
        self.refresh_s = refresh_s
        self.canaries = CanaryMonitor(store, data_dir, metrics)
        self.metrics = metrics
        self._runtimes: dict[str, tuple[float, TenantRuntime | None]] = {}
        self._failures: dict[str, str] = {}  # tenant -> the last load failure logged
        self._lock = threading.Lock()

    def get(self, snap, tenant_id: str) -> TenantRuntime | None:
        """The tenant's runtime, or None for an unknown tenant."""
        now = time.monotonic()
        entry = self._runtimes.get(tenant_id)
        if entry is not None and now - entry[0] < self.refresh_s:
            return entry[1]
        current = entry[1] if entry else None
        try:
            fingerprint = self._fingerprint(snap.txn, tenant_id)
            if fingerprint is None:
                runtime = None
            elif current is not None and current.fingerprint == fingerprint:
                runtime = current
            else:
                runtime = self._build(snap, tenant_id, fingerprint)
        except Exception as exc:
            if current is None:
                raise
            self._load_failed(tenant_id, current, exc)
            runtime = current  # last known good; retried at the next refresh
        else:
            self._failures.pop(tenant_id, None)
        self._runtimes[tenant_id] = (now, runtime)
        return runtime

    def _load_failed(self, tenant_id: str, current: "TenantRuntime", exc: Exception) -> None:
        why = f"{type(exc).__name__}: {exc}"
        if self._failures.get(tenant_id) != why:
            self._failures[tenant_id] = why
            log.error("tenant %s: cannot load the stored config (%s); keeps serving config version %d",
                      tenant_id, why, current.config.version)
        if self.metrics is not None:
            self.metrics.config_load_failed(tenant_id)

    def invalidate(self, tenant_id: str) -> None:
        self._runtimes.pop(tenant_id, None)

    def _fingerprint(self, txn, tenant_id: str) -> tuple | None:
        raw = txn.get(tenant_id.encode(), db=self.store.db["tenants"])
        if raw is None:
            return None
        pointers = tuple(bytes(txn.get(f"{tenant_id}\x00{name}".encode(), db=self.store.db["state"]) or b"")
                         for name in ("categories", "now_ts", "recency_half_life_days", "deploy_gen")
                         + tuple(f"index:{n}" for n in INDEX_NAMES) + tuple(f"model:{n}" for n in MODEL_NAMES))
        return (bytes(raw),) + pointers

    def _build(self, snap, tenant_id: str, fingerprint: tuple) -> TenantRuntime:
        config = TenantConfig.from_json(json.loads(fingerprint[0])).validate()  # as on write
        rt = TenantRuntime(tenant_id, config, fingerprint)
        rt.categories = snap.state(tenant_id, "categories", []) or []
        clock = snap.state(tenant_id, "now_ts")
        rt.clock_ts = float(clock) if clock is not None else None
        rt.recency_half_life_days = float(snap.state(tenant_id, "recency_half_life_days",
                                                     DEFAULT_RECENCY_HALF_LIFE_DAYS))
        rt.blocked_idx = self._resolve(snap, tenant_id, config.blocked_item_ids)
        rt.boosted_idx = self._resolve(snap, tenant_id, config.boosted_item_ids)
        mask = 0
        for name in config.blocked_categories:
            if name in rt.categories:
                mask |= 1 << rt.categories.index(name)
        rt.blocked_category_mask = mask & ((1 << MAX_CATEGORIES) - 1)
        rt.segments = SegmentPlan(config, rt.categories, lambda ids: self._resolve(snap, tenant_id, ids))
        for name in INDEX_NAMES:
            pointer = snap.state(tenant_id, f"index:{name}")
            if pointer:
                path = os.path.join(self.data_dir, pointer["path"])
                try:
                    rt.indexes[name] = open_index(path)
                except Exception as exc:  # a missing index only disables its source
                    log.error("tenant %s: cannot open %s index %s: %s", tenant_id, name, path, exc)
        for name in MODEL_NAMES:
            pointer = snap.state(tenant_id, f"model:{name}")
            try:
                if name == "rank" and config.linear_model_json:
                    rt.rank = _linear_scorer(config.linear_model_json)
                elif pointer:
                    setattr(rt, name, load_scorer(os.path.join(self.data_dir, pointer["path"]),
                                                  pointer["sha256"], tuple(pointer.get("features", ()))))
                else:
                    rt.model_errors[name] = f"no {name} model deployed"
            except ModelError as exc:
                log.error("tenant %s: %s", tenant_id, exc)
                rt.model_errors[name] = str(exc)
        self._build_models(snap, rt)
        return rt

    def _build_models(self, snap, rt: TenantRuntime) -> None:
        """Deployments -> per-surface SurfaceModels; experiment model versions -> override
        scorers. A version that fails to load is logged and left out (its surface
        serves the "*" stable; a canary that cannot load serves nobody)."""
        from server.models import deploy
        from server.models.registry import ModelRegistry

        registry = ModelRegistry(self.store, self.data_dir)
        linear_rank = bool(rt.config.linear_model_json)

        def load(version: str, kind: str):
            record = registry.get(snap.txn, rt.tenant_id, version)
            if record is None or record.kind != kind:
                log.error("tenant %s: %s model %s is not registered", rt.tenant_id, kind, version[:12])
                return None
            try:
                return load_scorer(os.path.join(self.data_dir, record.path), record.version, record.features)
            except ModelError as exc:
                log.error("tenant %s: %s", rt.tenant_id, exc)
                return None

        deployments = {(d.kind, d.surface): d for d in deploy.read_all(self.store, snap.txn, rt.tenant_id)}
        watches = []

        def kind_models(kind: str, surface: str, inherited: KindModels | None) -> KindModels:
            dep = deployments.get((kind, surface))
            if inherited is not None and (dep is None or not (dep.stable or dep.canary)):
                return inherited
            models = KindModels(stable=getattr(rt, kind))
            if surface != deploy.ALL_SURFACES:
                models.stable = inherited.stable
                if dep.stable and not (kind == "rank" and linear_rank):
                    models.stable = load(dep.stable, kind) or inherited.stable
            if dep is not None and dep.canary and not (kind == "rank" and linear_rank):
                canary = load(dep.canary, kind)
                if canary is not None:
                    models.canary, models.salt = canary, dep.salt
                    models.threshold = int(round(dep.canary_percent * BUCKETS / 100.0))
                    models.watch = self.canaries.watch(rt.tenant_id, kind, surface, dep.canary, dep.salt,
                                                       dep.guardrails)
                    watches.append(models.watch)
            return models

        every = {kind: kind_models(kind, deploy.ALL_SURFACES, None) for kind in MODEL_NAMES}
        rt.surface_models[deploy.ALL_SURFACES] = SurfaceModels(every["prerank"], every["rank"])
        for surface in sorted({s for _, s in deployments} - {deploy.ALL_SURFACES}):
            rt.surface_models[surface] = SurfaceModels(kind_models("prerank", surface, every["prerank"]),
                                                       kind_models("rank", surface, every["rank"]))
        self.canaries.retain(rt.tenant_id, watches)
        if not linear_rank:
            for experiment in getattr(rt.config, "experiments", ()):
                for variant in getattr(experiment, "variants", ()):
                    version = getattr(variant, "model_version", "")
                    if version and version not in rt.override_models:
                        scorer = load(version, "rank")
                        if scorer is not None:
                            rt.override_models[version] = scorer

    @staticmethod
    def _resolve(snap, tenant_id: str, item_ids) -> np.ndarray:
        found = [snap.item_index(tenant_id, item_id) for item_id in item_ids]
        return np.array(sorted(i for i in found if i is not None), dtype=np.int64)


def _linear_scorer(weight_json: str) -> Scorer:
    from server.models.onnx_build import linear_from_weight_map, model_sha256

    model = linear_from_weight_map(json.loads(weight_json))
    return Scorer(model, "linear-" + model_sha256(model)[:12])
