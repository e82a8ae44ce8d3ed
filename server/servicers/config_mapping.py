"""Proto mapping of the versioned parts of a tenant config: experiments (inside
``Tenant``) and the config history (``ConfigVersions``). Validation stays in
server.tenancy; this module only translates."""

from __future__ import annotations

from protos import funnel_pb2
from server.tenancy import RULE_FIELD_KINDS, Experiment, TenantConfig, TenantRegistry, Variant

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


def config_versions(registry: TenantRegistry, txn, current: TenantConfig,
                    page: int = CONFIG_VERSIONS_PAGE) -> funnel_pb2.ConfigVersions:
    """The newest ``page`` versions, newest first, each with what changed since the one before."""
    rows, truncated = registry.version_log(txn, current, page)
    out = funnel_pb2.ConfigVersions(tenant_id=current.tenant_id, current_version=current.version, truncated=truncated)
    for version, updated_at, summary in rows:
        out.versions.add(version=version, updated_at=updated_at, summary=summary)
    return out
