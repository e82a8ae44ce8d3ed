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
import struct
import time
from dataclasses import asdict, dataclass, field, fields

from kernels.layout import IMPRESSION_CAP, MATURITY_CODES
from ops.features import AFFINITY_HALF_LIFE_DAYS, MAX_HALF_LIFE_DAYS, TRENDING_HALF_LIFE_DAYS, HalfLives

TENANT_ID_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
DEFAULT_SURFACE = "*"


class ConfigError(ValueError):
    """A config that must be rejected on write; the message names the field."""


@dataclass(frozen=True)
class SegmentRules:
    """What one named segment may see on a surface (hard filters at every level).
    Category names the catalog does not (yet) hold are accepted and match no item,
    so ``allowed_categories`` naming only unknown categories lets the segment see nothing."""

    allowed_categories: tuple[str, ...] = ()  # empty = every category
    blocked_categories: tuple[str, ...] = ()
    blocked_item_ids: tuple[str, ...] = ()    # ids not in the catalog are ignored (like blocked_item_ids)


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
    # named segment (TenantConfig.segments) -> its eligibility on this surface; validated
    # by validate_segments. Not an experiment rule override (RULE_FIELD_KINDS leaves it out).
    segment_rules: dict[str, SegmentRules] = field(default_factory=dict)

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


# ----------------------------------------------------------------- experiments
# Names travel in FeedResponse.request_id ("<32 hex>.<experiment>.<variant>"), so no dots.
EXPERIMENT_NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
EXPERIMENT_STATUSES = ("running", "stopped")
EXPERIMENT_BUCKETS = 10_000          # assignment resolution (server.experiments)
MAX_EXPERIMENTS = 64
MAX_VARIANTS = 32
MAX_VARIANT_WEIGHT = 10_000
RULE_FIELD_KINDS = {f.name: f.type for f in fields(SurfaceRules)  # "int", "float", "tuple[int, ...]"
                    if f.name != "segment_rules"}


@dataclass(frozen=True)
class Variant:
    name: str
    weight: int = 1                  # relative to the experiment's other variants
    model_version: str = ""          # ranking-model version for this variant; "" = the deployed one
    rules: dict = field(default_factory=dict)  # partial SurfaceRules overrides, e.g. {"max_per_category": 1}

    def rules_over(self, base: SurfaceRules) -> SurfaceRules:
        from dataclasses import replace

        return replace(base, **self.rules) if self.rules else base


@dataclass(frozen=True)
class Experiment:
    name: str
    surface: str = DEFAULT_SURFACE   # "*" = every surface without a running experiment of its own
    salt: str = ""                   # "" = the name
    status: str = "stopped"
    variants: tuple[Variant, ...] = ()  # the first is the control

    @property
    def bucket_salt(self) -> str:
        return self.salt or self.name

    @property
    def running(self) -> bool:
        return self.status == "running"


def _rule_override_type_ok(name: str, value) -> bool:
    kind = RULE_FIELD_KINDS[name]
    if kind == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "float":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind in ("str", "bool"):
        return isinstance(value, str if kind == "str" else bool)
    return isinstance(value, tuple) and all(isinstance(v, int) and not isinstance(v, bool) for v in value)


def validate_experiments(experiments: tuple[Experiment, ...], surfaces: dict[str, SurfaceRules]) -> None:
    """Raises ConfigError naming the field (``experiments[i].variants[j].weight``)."""
    if len(experiments) > MAX_EXPERIMENTS:
        raise ConfigError(f"experiments: at most {MAX_EXPERIMENTS}")
    names: set[str] = set()
    running_on: dict[str, str] = {}
    for i, exp in enumerate(experiments):
        where = f"experiments[{i}]"
        if not EXPERIMENT_NAME_RE.match(exp.name):
            raise ConfigError(f"{where}.name: must match [A-Za-z0-9_-]{{1,64}}")
        if exp.name in names:
            raise ConfigError(f"{where}.name: duplicate experiment name {exp.name!r}")
        names.add(exp.name)
        if not exp.surface or len(exp.surface) > 64:
            raise ConfigError(f"{where}.surface: must be 1..64 characters ('*' = every surface)")
        if len(exp.salt) > 256:
            raise ConfigError(f"{where}.salt: longer than 256 characters")
        if exp.status not in EXPERIMENT_STATUSES:
            raise ConfigError(f"{where}.status: must be one of {', '.join(EXPERIMENT_STATUSES)}")
        if exp.running:
            if exp.surface in running_on:
                raise ConfigError(f"{where}.surface: experiment {running_on[exp.surface]!r} already runs on "
                                  f"surface {exp.surface!r} (at most one running experiment per surface)")
            running_on[exp.surface] = exp.name
        if not (2 <= len(exp.variants) <= MAX_VARIANTS):
            raise ConfigError(f"{where}.variants: must hold 2..{MAX_VARIANTS} variants")
        variant_names: set[str] = set()
        for j, variant in enumerate(exp.variants):
            vwhere = f"{where}.variants[{j}]"
            if not EXPERIMENT_NAME_RE.match(variant.name):
                raise ConfigError(f"{vwhere}.name: must match [A-Za-z0-9_-]{{1,64}}")
            if variant.name in variant_names:
                raise ConfigError(f"{vwhere}.name: duplicate variant name {variant.name!r}")
            variant_names.add(variant.name)
            if isinstance(variant.weight, bool) or not isinstance(variant.weight, int) or variant.weight <= 0:
                raise ConfigError(f"{vwhere}.weight: must be a positive integer")
            if variant.weight > MAX_VARIANT_WEIGHT:
                raise ConfigError(f"{vwhere}.weight: must be at most {MAX_VARIANT_WEIGHT}")
            if len(variant.model_version) > 128:
                raise ConfigError(f"{vwhere}.model_version: longer than 128 characters")
            unknown = set(variant.rules) - set(RULE_FIELD_KINDS)
            if unknown:
                raise ConfigError(f"{vwhere}.rules: unknown keys {', '.join(sorted(unknown))}")
            for name, value in variant.rules.items():
                if not _rule_override_type_ok(name, value):
                    raise ConfigError(f"{vwhere}.rules.{name}: wrong type {type(value).__name__}")
            # the overrides must make valid rules on every surface the experiment can serve
            bases = ([surfaces.get(exp.surface) or surfaces.get(DEFAULT_SURFACE) or SurfaceRules()]
                     if exp.surface != DEFAULT_SURFACE else list(surfaces.values()) + [SurfaceRules()])
            for base in bases:
                variant.rules_over(base).validate(f"{vwhere}.rules")
        total = sum(v.weight for v in exp.variants)
        for j, variant in enumerate(exp.variants):
            if variant.weight * EXPERIMENT_BUCKETS < total:
                raise ConfigError(f"{where}.variants[{j}].weight: below 1/{EXPERIMENT_BUCKETS} of the "
                                  f"experiment's total weight {total} (it would get no users)")


def _experiment_from_json(i: int, raw) -> Experiment:
    where = f"experiments[{i}]"
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: must be an object")
    unknown = set(raw) - {f.name for f in fields(Experiment)}
    if unknown:
        raise ConfigError(f"{where}: unknown keys {', '.join(sorted(unknown))}")
    variants = []
    for j, v in enumerate(raw.get("variants") or ()):
        if not isinstance(v, dict):
            raise ConfigError(f"{where}.variants[{j}]: must be an object")
        bad = set(v) - {f.name for f in fields(Variant)}
        if bad:
            raise ConfigError(f"{where}.variants[{j}]: unknown keys {', '.join(sorted(bad))}")
        rules = dict(v.get("rules") or {})
        if isinstance(rules.get("sponsored_positions"), list):
            rules["sponsored_positions"] = tuple(rules["sponsored_positions"])
        variants.append(Variant(**dict(v, rules=rules)))
    return Experiment(**dict(raw, variants=tuple(variants)))


# ------------------------------------------------------------------- segments
# A user's segment is the FIRST segment (in config order) whose rule matches; none when
# no rule matches. A rule is a conjunction of conditions over the user row at request
# time (server.segments); an empty rule matches everyone (a catch-all, best kept last).
SEGMENT_NAME_RE = EXPERIMENT_NAME_RE
MAX_SEGMENTS = 64
MAX_SEGMENT_LIST = 1000              # names per list (categories, item ids)
SEGMENT_LIFECYCLES = ("new", "active", "lapsed")
SEGMENT_CONSENTS = ("", "granted", "withheld")
NO_TOP_CATEGORY = "none"             # top_categories entry for users without any category affinity


@dataclass(frozen=True)
class Segment:
    name: str
    # user's top category (argmax of the category affinity) is one of these; "none" = no affinity
    top_categories: tuple[str, ...] = ()  # empty = any
    min_interactions: int = 0        # interaction count >= this
    max_interactions: int | None = None  # interaction count <= this; None = no bound
    min_skip_rate: float = 0.0       # skip rate (share of interactions with weight < 0.5) >= this
    max_skip_rate: float = 1.0       # ... <= this
    # new = unknown user or 0 interactions; active = last active <= lapsed_after_days ago; lapsed = longer ago
    lifecycle: tuple[str, ...] = ()  # empty = any
    lapsed_after_days: int = 30
    consent: str = ""                # "" = any, "granted", "withheld" (opted out of personalisation)


def validate_segments(segments: tuple[Segment, ...], surfaces: dict[str, SurfaceRules]) -> None:
    """Raises ConfigError naming the field (``segments[i].max_skip_rate``,
    ``surfaces['home'].segment_rules['kids'].allowed_categories``)."""
    if len(segments) > MAX_SEGMENTS:
        raise ConfigError(f"segments: at most {MAX_SEGMENTS}")
    names: set[str] = set()
    for i, seg in enumerate(segments):
        where = f"segments[{i}]"
        if not isinstance(seg.name, str) or not SEGMENT_NAME_RE.match(seg.name):
            raise ConfigError(f"{where}.name: must match [A-Za-z0-9_-]{{1,64}}")
        if seg.name in names:
            raise ConfigError(f"{where}.name: duplicate segment name {seg.name!r}")
        names.add(seg.name)
        _check_names(f"{where}.top_categories", seg.top_categories)
        if not _is_int(seg.min_interactions) or seg.min_interactions < 0:
            raise ConfigError(f"{where}.min_interactions: must be an integer >= 0")
        if seg.max_interactions is not None and (not _is_int(seg.max_interactions)
                                                 or seg.max_interactions < seg.min_interactions):
            raise ConfigError(f"{where}.max_interactions: must be an integer >= min_interactions")
        for name in ("min_skip_rate", "max_skip_rate"):
            value = getattr(seg, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not (0.0 <= value <= 1.0):
                raise ConfigError(f"{where}.{name}: must be within 0..1")
        if seg.min_skip_rate > seg.max_skip_rate:
            raise ConfigError(f"{where}.max_skip_rate: must be >= min_skip_rate")
        bad = [v for v in seg.lifecycle if v not in SEGMENT_LIFECYCLES]
        if bad or len(set(seg.lifecycle)) != len(seg.lifecycle):
            raise ConfigError(f"{where}.lifecycle: distinct values of {', '.join(SEGMENT_LIFECYCLES)}")
        if not _is_int(seg.lapsed_after_days) or not (1 <= seg.lapsed_after_days <= 3650):
            raise ConfigError(f"{where}.lapsed_after_days: must be within 1..3650")
        if seg.consent not in SEGMENT_CONSENTS:
            raise ConfigError(f"{where}.consent: must be '' (any), 'granted' or 'withheld'")
    for surface, rules in surfaces.items():
        for name, eligibility in rules.segment_rules.items():
            where = f"surfaces[{surface!r}].segment_rules[{name!r}]"
            if name not in names:
                raise ConfigError(f"{where}: unknown segment {name!r} (not in segments)")
            for key in ("allowed_categories", "blocked_categories", "blocked_item_ids"):
                _check_names(f"{where}.{key}", getattr(eligibility, key))


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_names(where: str, values) -> None:
    if len(values) > MAX_SEGMENT_LIST:
        raise ConfigError(f"{where}: at most {MAX_SEGMENT_LIST} names")
    if any(not isinstance(v, str) or not v or len(v) > 256 for v in values):
        raise ConfigError(f"{where}: names must be 1..256 characters")
    if len(set(values)) != len(values):
        raise ConfigError(f"{where}: duplicate names")


def _segment_from_json(i: int, raw) -> Segment:
    if not isinstance(raw, dict):
        raise ConfigError(f"segments[{i}]: must be an object")
    unknown = set(raw) - {f.name for f in fields(Segment)}
    if unknown:
        raise ConfigError(f"segments[{i}]: unknown keys {', '.join(sorted(unknown))}")
    raw = dict(raw)
    for key in ("top_categories", "lifecycle"):
        if key in raw:
            raw[key] = tuple(raw[key] or ())
    return Segment(**raw)


def _segment_rules_from_json(where: str, raw) -> dict[str, SegmentRules]:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}.segment_rules: must be an object")
    out = {}
    for name, rules in raw.items():
        if not isinstance(rules, dict):
            raise ConfigError(f"{where}.segment_rules[{name!r}]: must be an object")
        unknown = set(rules) - {f.name for f in fields(SegmentRules)}
        if unknown:
            raise ConfigError(f"{where}.segment_rules[{name!r}]: unknown keys {', '.join(sorted(unknown))}")
        out[name] = SegmentRules(**{k: tuple(v or ()) for k, v in rules.items()})
    return out


# ----------------------------------------------------------------- half-lives
HALF_LIFE_FIELDS = ("affinity_half_life_days", "trending_half_life_days")


def _check_half_life(name: str, value) -> None:
    # NaN fails both comparisons, inf the upper bound
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not (0.0 < value <= MAX_HALF_LIFE_DAYS):
        raise ConfigError(f"{name}: must be within (0, {MAX_HALF_LIFE_DAYS:g}] days, got {value!r}")


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
    experiments: tuple[Experiment, ...] = ()
    segments: tuple[Segment, ...] = ()   # evaluated in order: a user's segment is the first match
    # exponential time decay of the stored features (half_lives()); a change applies to the
    # events applied after it, as stored decayed sums are not recomputed
    affinity_half_life_days: float = AFFINITY_HALF_LIFE_DAYS   # user category affinity
    trending_half_life_days: float = TRENDING_HALF_LIFE_DAYS   # item trending weight, per-type counts
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
        self.half_lives()
        for name, rules in self.surfaces.items():
            if not name or len(name) > 64:
                raise ConfigError("surfaces: surface names must be 1..64 characters")
            rules.validate(f"surfaces[{name!r}]")
        validate_experiments(self.experiments, self.surfaces)
        validate_segments(self.segments, self.surfaces)
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

    def half_lives(self) -> HalfLives:
        """The half-lives the tenant's features decay with (ops.features.HalfLives). Raises
        ConfigError naming the field for a value outside (0, MAX_HALF_LIFE_DAYS], which only
        a config written around :meth:`validate` can hold."""
        for name in HALF_LIFE_FIELDS:
            _check_half_life(name, getattr(self, name))
        return HalfLives(float(self.affinity_half_life_days), float(self.trending_half_life_days))

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
            rules["segment_rules"] = _segment_rules_from_json(f"surfaces[{name!r}]", rules.get("segment_rules") or {})
            surfaces[name] = SurfaceRules(**rules)
        d["experiments"] = tuple(_experiment_from_json(i, e) for i, e in enumerate(d.get("experiments") or ()))
        d["segments"] = tuple(_segment_from_json(i, e) for i, e in enumerate(d.get("segments") or ()))
        for key in ("blocked_item_ids", "blocked_categories", "boosted_item_ids", "api_key_hashes"):
            if key in d:
                d[key] = tuple(d[key])
        return cls(surfaces=surfaces, **d)


def hash_key(api_key: str) -> str:
    return hashlib.sha256(api_key.encode()).hexdigest()


def new_api_key() -> str:
    return "fk_" + secrets.token_urlsafe(32)


class VersionNotFound(LookupError):
    """The tenant, or the requested version of its config, does not exist."""


def history_key(tenant_id: str, version: int) -> bytes:
    """Key of a version in db ``config_history``: big-endian, so a tenant's versions sort in order."""
    return tenant_id.encode() + b"\x00" + struct.pack(">Q", version)


def config_changes(older: dict, newer: dict) -> list[str]:
    """Top-level fields that differ between two stored config JSONs ("api_keys" for the key
    hashes). A field a JSON lacks (stored before the field existed) counts as its default."""
    defaults = TenantConfig(tenant_id="").to_json()
    return [("api_keys" if k == "api_key_hashes" else k) for k in sorted(set(older) | set(newer))
            if k not in ("version", "updated_at") and older.get(k, defaults.get(k)) != newer.get(k, defaults.get(k))]


class TenantRegistry:
    """Reads and writes tenant configs in the store. Writes are validated first and
    bump the version; a rejected config leaves the stored one untouched.

    Every write also appends the full stored config to db ``config_history`` under
    (tenant, version), in the same transaction. History is append-only: a restore
    writes the old config as a new version (with the current API keys)."""

    def __init__(self, store):
        self.store = store

    def get(self, txn, tenant_id: str) -> TenantConfig | None:
        raw = self.store.get_json(txn, "tenants", tenant_id.encode())
        return None if raw is None else TenantConfig.from_json(raw)

    def half_lives(self, txn, tenant_id: str) -> HalfLives:
        """The half-lives the tenant's config sets (the defaults for an unknown tenant), for
        the offline builders. Raises ConfigError when the stored config does not load."""
        config = self.get(txn, tenant_id)
        return config.half_lives() if config is not None else HalfLives()

    def get_version(self, txn, tenant_id: str, version: int) -> TenantConfig | None:
        """The config as it was stored at ``version``; None when that version is unknown.
        A current version written before the history existed is still found. Raises
        ConfigError when the stored version no longer loads (a field since removed)."""
        db = self.store.db.get("config_history")  # absent in a read-only store of an older data dir
        raw = txn.get(history_key(tenant_id, version), db=db) if db is not None and version > 0 else None
        if raw is None:
            current = self.get(txn, tenant_id)
            return current if current is not None and current.version == version else None
        return TenantConfig.from_json(json.loads(bytes(raw)))

    def history(self, txn, tenant_id: str, limit: int, before: int = 0) -> list[tuple[int, dict]]:
        """Up to ``limit`` stored versions below ``before`` (0 = from the newest), newest
        first, as (version, raw config JSON)."""
        db = self.store.db.get("config_history")
        out: list[tuple[int, dict]] = []
        if db is None or limit <= 0:
            return out
        prefix = tenant_id.encode() + b"\x00"
        cur = txn.cursor(db=db)
        start = history_key(tenant_id, before) if before > 0 else prefix + b"\xff" * 8
        found = cur.prev() if cur.set_range(start) else cur.last()
        while found and len(out) < limit:
            key = bytes(cur.key())
            if not key.startswith(prefix) or len(key) != len(prefix) + 8:
                break
            out.append((struct.unpack(">Q", key[len(prefix):])[0], json.loads(bytes(cur.value()))))
            found = cur.prev()
        return out

    def version_log(self, txn, current: TenantConfig, page: int) -> tuple[list[tuple[int, float, str]], bool]:
        """The newest ``page`` versions of the tenant's config, newest first, as
        (version, updated_at, what changed since the version before), and whether
        older ones exist."""
        stored = self.history(txn, current.tenant_id, page + 1)  # +1: the predecessor of the oldest listed
        if not stored or stored[0][0] < current.version:  # written before the history existed
            stored.insert(0, (current.version, current.to_json()))
        rows = []
        for k, (version, doc) in enumerate(stored[:page]):
            older = stored[k + 1] if k + 1 < len(stored) else None
            if older is not None and older[0] == version - 1:
                changes = config_changes(older[1], doc)
                summary = "changed: " + ", ".join(changes) if changes else "no change"
            else:
                summary = "created" if version == 1 else "earliest stored version"
            rows.append((version, float(doc.get("updated_at", 0.0)), summary))
        return rows, len(stored) > page

    def put(self, config: TenantConfig) -> TenantConfig:
        config.validate()
        with self.store.write() as txn:
            return self._write(txn, config)

    def restore(self, tenant_id: str, version: int) -> TenantConfig:
        """Writes the config of ``version`` as a new version. API keys stay the current
        ones: a restore never brings back a rotated key. VersionNotFound for an unknown
        tenant or version; ConfigError when the old config fails today's validation."""
        with self.store.write() as txn:
            current = self.get(txn, tenant_id)
            if current is None:
                raise VersionNotFound(f"tenant_id: {tenant_id!r} does not exist")
            old = self.get_version(txn, tenant_id, version)
            if old is None:
                raise VersionNotFound(f"version: tenant {tenant_id!r} has no stored version {version}")
            restored = TenantConfig.from_json(dict(old.to_json(), api_key_hashes=list(current.api_key_hashes)))
            restored.validate()
            return self._write(txn, restored)

    def _write(self, txn, config: TenantConfig) -> TenantConfig:
        current = self.get(txn, config.tenant_id)
        version = (current.version if current else 0) + 1
        if current is not None and txn.get(history_key(current.tenant_id, current.version),
                                           db=self.store.db["config_history"]) is None:
            # written before the history existed: keep it, so it can be restored
            self.store.put_json(txn, "config_history", history_key(current.tenant_id, current.version),
                                current.to_json())
        stored = TenantConfig.from_json(dict(config.to_json(), version=version, updated_at=time.time()))
        doc = stored.to_json()
        self.store.put_json(txn, "tenants", config.tenant_id.encode(), doc)
        self.store.put_json(txn, "config_history", history_key(config.tenant_id, version), doc)
        return stored
