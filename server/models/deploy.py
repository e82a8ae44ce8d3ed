"""Deployments: which registered model serves a tenant's surface, with canary, ramp
and rollback.

One record per tenant, kind and surface in the tenant ``state`` db, key
``deploy:<kind>:<surface>``::

    {kind, surface, stable, canary, canary_percent, guardrails, salt,
     previous: [versions that were stable before, newest last],
     history: [{at, action, actor, reason, stable, canary, canary_percent, measured?}, ...]}

``surface`` "*" covers every surface without a record of its own; its stable
version is also the legacy pointer ``model:<kind>`` (what ``funnel train``
publishes, see :func:`record_publish`), so the two never disagree. A surface's
``stable`` may be null: it then serves the "*" stable. Every change bumps the
tenant state ``deploy_gen`` in the same transaction; serving's runtime fingerprint
includes it, so every process rebuilds its runtime within the refresh interval.

Users are split by ``hash(salt, user_id)``: the salt is drawn when a canary is
deployed and kept while it ramps, so a user stays on the canary (or off it) until
it is promoted or rolled back.
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import asdict, dataclass

from server.models.registry import KINDS, ModelRecord, ModelRegistry
from server.store.lmdb_store import SEP, tkey

ALL_SURFACES = "*"
MAX_HISTORY = 200
MAX_PREVIOUS = 20
MAX_TEXT = 512                     # actor and reason
DEFAULT_MIN_REQUESTS = 100


class DeployError(Exception):
    """``code``: "invalid" (bad argument), "not_found", or "precondition"; the message names the field."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Guardrails:
    """Limits on a canary, measured per serving process over a sliding window of the
    canary's requests (server.models.canary); None = not checked.

    max_error_rate: share of canary requests whose canary model failed to run.
    max_nan_rate:   share of the canary's scores that were NaN or infinite.
    max_p99_ms:     p99 server time of the canary's requests, milliseconds.
    min_requests:   nothing is judged before the window holds this many requests."""

    max_error_rate: float | None = None
    max_nan_rate: float | None = None
    max_p99_ms: float | None = None
    min_requests: int = DEFAULT_MIN_REQUESTS

    def validate(self) -> "Guardrails":
        for name in ("max_error_rate", "max_nan_rate"):
            value = getattr(self, name)
            if value is not None and not (0.0 <= value <= 1.0):
                raise DeployError("invalid", f"guardrails.{name}: must be within 0..1")
        if self.max_p99_ms is not None and not (0.0 < self.max_p99_ms <= 600_000):
            raise DeployError("invalid", "guardrails.max_p99_ms: must be within 0..600000 (exclusive of 0)")
        if not (1 <= self.min_requests <= 1_000_000):
            raise DeployError("invalid", "guardrails.min_requests: must be within 1..1000000")
        return self

    @property
    def any(self) -> bool:
        return any(v is not None for v in (self.max_error_rate, self.max_nan_rate, self.max_p99_ms))

    @classmethod
    def from_json(cls, d: dict | None) -> "Guardrails":
        return cls(**(d or {}))


@dataclass
class Deployment:
    tenant: str
    kind: str
    surface: str
    stable: str | None = None
    canary: str | None = None
    canary_percent: float = 0.0
    guardrails: Guardrails = Guardrails()
    salt: str = ""
    previous: list | None = None
    history: list | None = None

    def to_json(self) -> dict:
        d = asdict(self)
        d.pop("tenant")
        d["guardrails"] = asdict(self.guardrails)
        return d

    @classmethod
    def from_json(cls, tenant: str, d: dict) -> "Deployment":
        d = dict(d)
        d["guardrails"] = Guardrails.from_json(d.get("guardrails"))
        return cls(tenant=tenant, **d)


def state_key(kind: str, surface: str) -> str:
    return f"deploy:{kind}:{surface}"


def read(store, txn, tenant: str, kind: str, surface: str) -> Deployment:
    """The record (an empty one when there is none); for "*" the stable version is
    the ``model:<kind>`` pointer."""
    raw = store.get_state(txn, tenant, state_key(kind, surface))
    dep = Deployment.from_json(tenant, raw) if raw else Deployment(tenant, kind, surface, previous=[], history=[])
    if surface == ALL_SURFACES:
        pointer = store.get_state(txn, tenant, f"model:{kind}") or {}
        dep.stable = pointer.get("sha256") or dep.stable
    return dep


def read_all(store, txn, tenant: str) -> list[Deployment]:
    """Every record of the tenant (plus the "*" ones implied by ``model:<kind>`` pointers)."""
    prefix = tkey(tenant, "deploy:")
    found: dict[tuple[str, str], Deployment] = {}
    cur = txn.cursor(db=store.db["state"])
    if cur.set_range(prefix):
        for key, value in cur:
            key = bytes(key)
            if not key.startswith(prefix):
                break
            _, kind, surface = key[len(tenant) + len(SEP):].decode().split(":", 2)
            found[(kind, surface)] = Deployment.from_json(tenant, json.loads(bytes(value)))
    for kind in KINDS:
        dep = found.get((kind, ALL_SURFACES)) or Deployment(tenant, kind, ALL_SURFACES, previous=[], history=[])
        pointer = store.get_state(txn, tenant, f"model:{kind}") or {}
        dep.stable = pointer.get("sha256") or dep.stable
        if dep.stable or dep.canary or dep.history:
            found[(kind, ALL_SURFACES)] = dep
    return sorted(found.values(), key=lambda d: (d.kind, d.surface != ALL_SURFACES, d.surface))


def _event(dep: Deployment, action: str, actor: str, reason: str, **extra) -> None:
    entry = {"at": time.time(), "action": action, "actor": actor, "reason": reason, "stable": dep.stable,
             "canary": dep.canary, "canary_percent": dep.canary_percent}
    entry.update(extra)
    dep.history = (dep.history or []) + [entry]
    del dep.history[:-MAX_HISTORY]


def _write(store, txn, dep: Deployment, registry: ModelRegistry | None = None) -> None:
    store.set_state(txn, dep.tenant, state_key(dep.kind, dep.surface), dep.to_json())
    if dep.surface == ALL_SURFACES and registry is not None and dep.stable:
        current = store.get_state(txn, dep.tenant, f"model:{dep.kind}") or {}
        if current.get("sha256") != dep.stable:
            record = registry.get(txn, dep.tenant, dep.stable)
            if record is None:
                raise DeployError("precondition", f"version: {dep.stable[:12]} is not in the model registry")
            store.set_state(txn, dep.tenant, f"model:{dep.kind}", pointer_for(record))
    gen = int(store.get_state(txn, dep.tenant, "deploy_gen", 0)) + 1
    store.set_state(txn, dep.tenant, "deploy_gen", gen)


def pointer_for(record: ModelRecord) -> dict:
    """The ``model:<kind>`` pointer of a registered model (the shape train writes)."""
    return {"sha256": record.version, "path": record.path, "features": list(record.features),
            "kind": record.metrics.get("architecture", "registered"),
            "trained_at": time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(record.uploaded_at)),
            "metrics": record.metrics}


def _push_previous(dep: Deployment) -> None:
    dep.previous = (dep.previous or []) + [dep.stable]
    del dep.previous[:-MAX_PREVIOUS]


def _check_common(tenant_config, kind: str, surface: str, actor: str, reason: str) -> None:
    if tenant_config is None:
        raise DeployError("not_found", "tenant_id: no such tenant")
    if kind not in KINDS:
        raise DeployError("invalid", f"kind: {kind!r} is not one of {', '.join(KINDS)}")
    if not surface or len(surface) > 64 or ":" in surface:
        raise DeployError("invalid", "surface: 1..64 characters without ':' (\"*\" = every surface)")
    if len(actor) > MAX_TEXT or len(reason) > MAX_TEXT:
        raise DeployError("invalid", f"actor, reason: at most {MAX_TEXT} characters")


class Deployer:
    """Deploy, ramp and roll back, each in one write transaction of ``store``."""

    def __init__(self, store, registry: ModelRegistry):
        self.store = store
        self.registry = registry

    def _tenant(self, txn, tenant: str):
        from server.tenancy import TenantRegistry

        return TenantRegistry(self.store).get(txn, tenant)

    def deploy(self, tenant: str, surface: str, kind: str, version: str, canary_percent: float = 100.0,
               guardrails: Guardrails = Guardrails(), actor: str = "", reason: str = "") -> Deployment:
        """``canary_percent`` 100 promotes ``version`` to stable at once (any canary is
        dropped); below 100 it becomes the canary for that share of users (0 = dark)."""
        guardrails.validate()
        if not (0.0 <= canary_percent <= 100.0):
            raise DeployError("invalid", "canary_percent: must be within 0..100")
        with self.store.write() as txn:
            config = self._tenant(txn, tenant)
            _check_common(config, kind, surface, actor, reason)
            record = self.registry.get(txn, tenant, version) if version else None
            if record is None:
                raise DeployError("not_found", f"version: {version!r} is not a registered model of tenant "
                                               f"{tenant!r}" if version else "version: required")
            if record.kind != kind:
                raise DeployError("precondition", f"version: {record.version[:12]} is a {record.kind} model, "
                                                  f"not {kind}")
            if kind == "rank" and config.linear_model_json:
                raise DeployError("precondition", f"tenant {tenant!r} ranks with its linear_model_json override; "
                                                  "clear it before deploying a rank model")
            dep = read(self.store, txn, tenant, kind, surface)
            if canary_percent >= 100.0:
                if dep.stable != record.version:
                    _push_previous(dep)
                dep.stable, dep.canary, dep.canary_percent, dep.salt = record.version, None, 0.0, ""
                dep.guardrails = guardrails
                _event(dep, "promote", actor, reason)
            else:
                if record.version == dep.stable:
                    raise DeployError("precondition", f"version: {record.version[:12]} is already the stable "
                                                      f"{kind} model of surface {surface!r}")
                replaced = dep.canary
                dep.canary, dep.canary_percent = record.version, float(canary_percent)
                dep.guardrails, dep.salt = guardrails, secrets.token_hex(8)
                _event(dep, "canary", actor, reason, **({"replaced": replaced} if replaced else {}))
            _write(self.store, txn, dep, self.registry)
            return dep

    def ramp(self, tenant: str, surface: str, kind: str, percent: float, actor: str = "",
             reason: str = "") -> Deployment:
        """Moves the canary's share; 100 promotes it to stable."""
        if not (0.0 <= percent <= 100.0):
            raise DeployError("invalid", "percent: must be within 0..100")
        with self.store.write() as txn:
            _check_common(self._tenant(txn, tenant), kind, surface, actor, reason)
            dep = read(self.store, txn, tenant, kind, surface)
            if not dep.canary:
                raise DeployError("precondition", f"no {kind} canary on surface {surface!r} to ramp")
            if percent >= 100.0:
                _push_previous(dep)
                dep.stable, dep.canary, dep.canary_percent, dep.salt = dep.canary, None, 0.0, ""
                _event(dep, "promote", actor, reason)
            else:
                dep.canary_percent = float(percent)
                _event(dep, "ramp", actor, reason)
            _write(self.store, txn, dep, self.registry)
            return dep

    def rollback(self, tenant: str, surface: str, kind: str, actor: str = "", reason: str = "") -> Deployment:
        """Drops the canary (stable stays); without a canary, goes back to the previous stable."""
        with self.store.write() as txn:
            _check_common(self._tenant(txn, tenant), kind, surface, actor, reason)
            dep = read(self.store, txn, tenant, kind, surface)
            if dep.canary:
                dropped = dep.canary
                dep.canary, dep.canary_percent, dep.salt = None, 0.0, ""
                _event(dep, "rollback", actor, reason, dropped=dropped)
            else:
                previous = list(dep.previous or [])
                while previous and previous[-1] == dep.stable:
                    previous.pop()
                if not previous or (previous[-1] is None and surface == ALL_SURFACES):
                    raise DeployError("precondition", f"no {kind} canary and no previous stable version on "
                                                      f"surface {surface!r} to roll back to")
                dropped = dep.stable
                dep.stable = previous[-1]
                dep.previous = previous[:-1]
                _event(dep, "rollback", actor, reason, dropped=dropped)
            _write(self.store, txn, dep, self.registry)
            return dep

    def auto_rollback(self, tenant: str, kind: str, surface: str, canary: str, measured: dict,
                      why: str, actor: str = "auto-rollback") -> bool:
        """Drops ``canary`` if it is still the deployed canary (idempotent across
        processes: only the first writer changes anything). Returns whether it did."""
        with self.store.write() as txn:
            dep = read(self.store, txn, tenant, kind, surface)
            if dep.canary != canary:
                return False
            dep.canary, dep.canary_percent, dep.salt = None, 0.0, ""
            _event(dep, "auto-rollback", actor, why, dropped=canary, measured=measured)
            _write(self.store, txn, dep, self.registry)
            return True


def record_publish(store, txn, tenant: str, kind: str, pointer: dict, actor: str, reason: str) -> None:
    """``funnel train``'s publication, inside its transaction: sets the ``model:<kind>``
    pointer and notes the new "*" stable in the deploy record (the old one becomes
    the rollback target; a canary on "*" stays, now measured against the new stable)."""
    dep = read(store, txn, tenant, kind, ALL_SURFACES)
    version = pointer["sha256"]
    if dep.stable != version:
        if dep.stable:
            _push_previous(dep)
        dep.stable = version
        if dep.canary == version:
            dep.canary, dep.canary_percent, dep.salt = None, 0.0, ""
        _event(dep, "publish", actor, reason)
    store.set_state(txn, tenant, f"model:{kind}", pointer)
    _write(store, txn, dep)
