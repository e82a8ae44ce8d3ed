"""Proto mapping of the versioned parts of a tenant config: experiments and segments
(inside ``Tenant``; segment eligibility inside ``SurfaceRules``) and the config
history (``ConfigVersions``). Validation stays in
server.tenancy; this module only translates."""

from __future__ import annotations

from protos import funnel_pb2
from server.tenancy import (
    RULE_FIELD_KINDS,
    Experiment,
    Segment,
    SegmentRules,
    TenantConfig,
    TenantRegistry,
    Variant,
)

CONFIG_VERSIONS_PAGE = 100
_STATUS_TO_PROTO = {"running": funnel_pb2.EXPERIMENT_RUNNING, "stopped": funnel_pb2.EXPERIMENT_STOPPED}
_STATUS_FROM_PROTO = {v: k for k, v in _STATUS_TO_PROTO.items()}  # UNSPECIFIED -> "": rejected by validation
# RuleOverrides mirrors SurfaceRules field by field (tests/unit/test_experiments.py checks that it covers them all)
_SCALAR_RULES = tuple(name for name in RULE_FIELD_KINDS
                      if name != "sponsored_positions" and name in funnel_pb2.RuleOverrides.DESCRIPTOR.fields_by_name)


def experiments_to_proto(experiments: tuple[Experiment, ...]) -> list[funnel_pb2.Experiment]:
    out = []
    for exp in experiments:
        msg = funnel_pb2.Experiment(name=exp.name, surface=exp.surface, salt=exp.salt,
                                    status=_STATUS_TO_PROTO.get(exp.status, funnel_pb2.EXPERIMENT_STATUS_UNSPECIFIED))
        for variant in exp.variants:
            v = msg.variants.add(name=variant.name, weight=variant.weight, model_version=variant.model_version)
            for name, value in variant.rules.items():
                if name == "sponsored_positions":
                    v.rules.sponsored_positions.SetInParent()
                    v.rules.sponsored_positions.positions.extend(value)
                elif name in _SCALAR_RULES:
                    setattr(v.rules, name, value)
        out.append(msg)
    return out


def experiments_from_proto(messages) -> tuple[Experiment, ...]:
    experiments = []
    for msg in messages:
        variants = []
        for v in msg.variants:
            rules = {name: getattr(v.rules, name) for name in _SCALAR_RULES if v.rules.HasField(name)}
            if v.rules.HasField("sponsored_positions"):
                rules["sponsored_positions"] = tuple(v.rules.sponsored_positions.positions)
            variants.append(Variant(name=v.name, weight=v.weight, model_version=v.model_version, rules=rules))
        experiments.append(Experiment(name=msg.name, surface=msg.surface, salt=msg.salt,
                                      status=_STATUS_FROM_PROTO.get(msg.status, ""), variants=tuple(variants)))
    return tuple(experiments)


def segments_to_proto(segments: tuple[Segment, ...]) -> list[funnel_pb2.Segment]:
    out = []
    for seg in segments:
        msg = funnel_pb2.Segment(name=seg.name, top_categories=seg.top_categories,
                                 min_interactions=seg.min_interactions, min_skip_rate=seg.min_skip_rate,
                                 lifecycle=seg.lifecycle, lapsed_after_days=seg.lapsed_after_days,
                                 consent=seg.consent)
        if seg.max_interactions is not None:
            msg.max_interactions = seg.max_interactions
        if seg.max_skip_rate != Segment.max_skip_rate:
            msg.max_skip_rate = seg.max_skip_rate
        out.append(msg)
    return out


def segments_from_proto(messages) -> tuple[Segment, ...]:
    return tuple(Segment(
        name=m.name, top_categories=tuple(m.top_categories), min_interactions=m.min_interactions,
        max_interactions=m.max_interactions if m.HasField("max_interactions") else None,
        # float32 on the wire: round to the value the caller most likely wrote (0.3, not 0.30000001)
        min_skip_rate=_float32(m.min_skip_rate),
        max_skip_rate=_float32(m.max_skip_rate) if m.HasField("max_skip_rate") else Segment.max_skip_rate,
        lifecycle=tuple(m.lifecycle), lapsed_after_days=m.lapsed_after_days or Segment.lapsed_after_days,
        consent=m.consent) for m in messages)


def _float32(value: float) -> float:
    return float(f"{value:.7g}")


def segment_rules_to_proto(rules: dict[str, SegmentRules], into) -> None:
    """Fills the ``segment_rules`` map of a proto SurfaceRules."""
    for name, r in rules.items():
        into[name].CopyFrom(funnel_pb2.SegmentRules(allowed_categories=r.allowed_categories,
                                                    blocked_categories=r.blocked_categories,
                                                    blocked_item_ids=r.blocked_item_ids))


def segment_rules_from_proto(rules) -> dict[str, SegmentRules]:
    return {name: SegmentRules(tuple(r.allowed_categories), tuple(r.blocked_categories), tuple(r.blocked_item_ids))
            for name, r in rules.items()}


def config_versions(registry: TenantRegistry, txn, current: TenantConfig,
                    page: int = CONFIG_VERSIONS_PAGE) -> funnel_pb2.ConfigVersions:
    """The newest ``page`` versions, newest first, each with what changed since the one before."""
    rows, truncated = registry.version_log(txn, current, page)
    out = funnel_pb2.ConfigVersions(tenant_id=current.tenant_id, current_version=current.version, truncated=truncated)
    for version, updated_at, summary in rows:
        out.versions.add(version=version, updated_at=updated_at, summary=summary)
    return out
