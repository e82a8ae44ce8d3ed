"""Tenants: validated, versioned configuration and API-key authentication.

A tenant config is stored as JSON in the store's ``tenants`` db. API keys are
kept only as SHA-256 digests (keys are 256-bit random tokens, so a fast hash is
enough) and compared with ``hmac.compare_digest``. An unknown tenant and a wrong
key are indistinguishable to the caller, so tenants cannot be enumerated.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
import time
from dataclasses import asdict, dataclass, field, fields

from kernels.layout import IMPRESSION_CAP, MATURITY_CODES

TENANT_ID_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
DEFAULT_SURFACE = "*"


class ConfigError(ValueError):
    """A config that must be rejected on write; the message names the field."""


@dataclass(frozen=True)
class SurfaceRules:
    max_per_category: int = 3
    max_streak: int = 2
    freshness_weight: float = 0.0
    sponsored_positions: tuple[int, ...] = ()
    editorial_weight: float = 1.0
    # frequency caps: at most this many impressions of one item (per sponsored campaign:
    # of the campaign's items) per user within the window; 0 = no cap
    frequency_cap: int = 0
    campaign_frequency_cap: int = 0
    frequency_window_s: int = 86400

    def validate(self, where: str) -> None:
        if self.max_per_category < 0 or self.max_streak < 0:
            raise ConfigError(f"{where}: max_per_category and max_streak must be >= 0")
        if not (0.0 <= self.freshness_weight <= 10.0):
            raise ConfigError(f"{where}.freshness_weight: must be within 0..10")
        if not (0.0 <= self.editorial_weight <= 10.0):
            raise ConfigError(f"{where}.editorial_weight: must be within 0..10")
        if len(set(self.sponsored_positions)) != len(self.sponsored_positions) or any(
                p < 0 or p > 1000 for p in self.sponsored_positions):
            raise ConfigError(f"{where}.sponsored_positions: must be distinct positions within 0..1000")
        if not (0 <= self.frequency_cap <= IMPRESSION_CAP and 0 <= self.campaign_frequency_cap <= IMPRESSION_CAP):
            raise ConfigError(f"{where}: frequency_cap and campaign_frequency_cap must be within 0..{IMPRESSION_CAP} "
                              "(impressions remembered per user)")
        if not (60 <= self.frequency_window_s <= 90 * 86400):
            raise ConfigError(f"{where}.frequency_window_s: must be within 60..7776000 (90 days)")


@dataclass(frozen=True)
class TenantConfig:
    tenant_id: str
    name: str = ""
    maturity_policy: str = "PG13"
    personalization_enabled: bool = True
    default_limit: int = 20
    max_limit: int = 100
    latency_budget_ms: int = 50
    blocked_item_ids: tuple[str, ...] = ()
    blocked_categories: tuple[str, ...] = ()
    boosted_item_ids: tuple[str, ...] = ()
    surfaces: dict[str, SurfaceRules] = field(default_factory=lambda: {DEFAULT_SURFACE: SurfaceRules()})
    linear_model_json: str = ""
    api_key_hashes: tuple[str, ...] = ()
    version: int = 0
    updated_at: float = 0.0

    # ------------------------------------------------------------ validation
    def validate(self) -> "TenantConfig":
        if not TENANT_ID_RE.match(self.tenant_id):
            raise ConfigError("tenant_id: must match [a-z0-9][a-z0-9_-]{0,62}")
        if self.maturity_policy not in MATURITY_CODES:
            raise ConfigError(f"maturity_policy: {self.maturity_policy!r} is not one of {', '.join(MATURITY_CODES)}")
        if not (1 <= self.max_limit <= 1000):
            raise ConfigError("max_limit: must be within 1..1000")
        if not (1 <= self.default_limit <= self.max_limit):
            raise ConfigError("default_limit: must be within 1..max_limit")
        if not (1 <= self.latency_budget_ms <= 60_000):
            raise ConfigError("latency_budget_ms: must be within 1..60000")
        for name, rules in self.surfaces.items():
            if not name or len(name) > 64:
                raise ConfigError("surfaces: surface names must be 1..64 characters")
            rules.validate(f"surfaces[{name!r}]")
        if self.linear_model_json:
            from server.models.onnx_build import linear_from_weight_map  # validates feature names

            try:
                weights = json.loads(self.linear_model_json)
            except json.JSONDecodeError as exc:
                raise ConfigError(f"linear_model_json: not valid JSON ({exc.msg})") from None
            if not isinstance(weights, dict) or not all(
                    isinstance(v, (int, float)) and not isinstance(v, bool) for v in weights.values()):
                raise ConfigError("linear_model_json: must be an object of feature name -> number")
            try:
                linear_from_weight_map(weights)
            except ValueError as exc:
                raise ConfigError(f"linear_model_json: {exc}") from None
        return self

    def rules_for(self, surface: str) -> SurfaceRules:
        return self.surfaces.get(surface) or self.surfaces.get(DEFAULT_SURFACE) or SurfaceRules()

    @property
    def max_maturity(self) -> int:
        return MATURITY_CODES[self.maturity_policy]

    # ------------------------------------------------------------- keys
    def check_key(self, api_key: str) -> bool:
        digest = hash_key(api_key)
        ok = False
        for stored in self.api_key_hashes:  # no early exit: time does not depend on which key matched
            ok |= hmac.compare_digest(stored, digest)
        return ok

    # ------------------------------------------------------------- (de)serialise
    def to_json(self) -> dict:
        d = asdict(self)
        d["surfaces"] = {k: asdict(v) for k, v in self.surfaces.items()}
        return d

    @classmethod
    def from_json(cls, d: dict) -> "TenantConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ConfigError(f"unknown tenant config keys: {', '.join(sorted(unknown))}")
        d = dict(d)
        surfaces = {}
        for name, rules in (d.pop("surfaces", None) or {DEFAULT_SURFACE: {}}).items():
            rule_fields = {f.name for f in fields(SurfaceRules)}
            bad = set(rules) - rule_fields
            if bad:
                raise ConfigError(f"surfaces[{name!r}]: unknown keys {', '.join(sorted(bad))}")
            rules = dict(rules)
            rules["sponsored_positions"] = tuple(rules.get("sponsored_positions", ()))
            surfaces[name] = SurfaceRules(**rules)
        for key in ("blocked_item_ids", "blocked_categories", "boosted_item_ids", "api_key_hashes"):
            if key in d:
                d[key] = tuple(d[key])
        return cls(surfaces=surfaces, **d)


def hash_key(api_key: str) -> str:
    return hashlib.sha256(api_key.encode()).hexdigest()


def new_api_key() -> str:
    return "fk_" + secrets.token_urlsafe(32)


class TenantRegistry:
    """Reads and writes tenant configs in the store. Writes are validated first and
    bump the version; a rejected config leaves the stored one untouched."""

    def __init__(self, store):
        self.store = store

    def get(self, txn, tenant_id: str) -> TenantConfig | None:
        raw = self.store.get_json(txn, "tenants", tenant_id.encode())
        return None if raw is None else TenantConfig.from_json(raw)

    def put(self, config: TenantConfig) -> TenantConfig:
        config.validate()
        with self.store.write() as txn:
            current = self.get(txn, config.tenant_id)
            version = (current.version if current else 0) + 1
            stored = TenantConfig.from_json(dict(config.to_json(), version=version, updated_at=time.time()))
            self.store.put_json(txn, "tenants", config.tenant_id.encode(), stored.to_json())
        return stored
