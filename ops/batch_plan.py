"""``funnel batch-plan``: write a segment's precomputed feeds as JSONL.

Runs the serving code path in this process (:class:`server.batch_plans.BatchPlanner`)
against the data directory, one row per user:
``{user_id, surface, items[{item_id, score, reason}], model_version, config_version,
level, generated_at, valid_until}``. The file is written to ``<out>.tmp`` and renamed
when complete, so a reader never sees half a plan.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from dataclasses import dataclass, field

from tqdm import tqdm

from server.batch_plans import BatchPlanner, PlanSpec, row_json


@dataclass
class PlanReport:
    out: str
    users: int = 0
    seconds: float = 0.0
    levels: Counter = field(default_factory=Counter)
    model_versions: Counter = field(default_factory=Counter)
    config_versions: Counter = field(default_factory=Counter)

    @property
    def users_per_s(self) -> float:
        return self.users / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> str:
        levels = ", ".join(f"{level}: {n}" for level, n in sorted(self.levels.items())) or "-"
        models = ", ".join(f"{v or '(none: fallback)'}: {n}" for v, n in self.model_versions.most_common())
        configs = ", ".join(f"v{v}: {n}" for v, n in sorted(self.config_versions.items()))
        return (f"wrote {self.users} plan rows to {self.out} in {self.seconds:.1f}s ({self.users_per_s:.0f} users/s)\n"
                f"  levels {{{levels}}}; model versions {models or '-'}; config {configs or '-'}")


def write_batch_plan(data_dir: str, spec: PlanSpec, out: str, progress: bool = True) -> PlanReport:
    """Raises server.batch_plans.PlanError for a bad spec (nothing written)."""
    from server.app import ServeSettings, ServingApp

    app = ServingApp(ServeSettings(data_dir=data_dir))
    try:
        planner = BatchPlanner(app)
        users = planner.users(spec)
        report = PlanReport(out)
        tmp = out + ".tmp"
        started = time.perf_counter()
        with open(tmp, "w") as f:
            for user_id in tqdm(users, unit="user", disable=not progress, desc=f"plan {spec.tenant_id}/{spec.surface}"):
                row = planner.row(spec, user_id)
                f.write(json.dumps(row_json(row), separators=(",", ":")) + "\n")
                report.levels[row.degradation_level] += 1
                report.model_versions[row.model_version] += 1
                report.config_versions[row.config_version] += 1
        report.seconds = time.perf_counter() - started
        report.users = len(users)
        os.replace(tmp, out)
        return report
    finally:
        app.store.close()
