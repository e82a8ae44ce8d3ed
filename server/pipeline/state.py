"""Per-request state shared by the funnel stages."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from kernels.layout import MAX_CATEGORIES, USER_AFFINITY, USER_CONSENT, USER_WIDTH
from server.segments import user_facts
from server.store import user_recent_items, user_row_view, user_seen_view
from server.tenancy import SurfaceRules

# source bits (FeedItem.sources); 7 bits, the cursor keeps the 8th for "sponsored"
SOURCE_CF, SOURCE_CONTENT, SOURCE_TRENDING, SOURCE_EDITORIAL = 1, 2, 4, 8
SOURCE_CACHE, SOURCE_SEGMENT, SOURCE_POPULAR = 16, 32, 64
SOURCE_NAMES = ((SOURCE_CF, "cf"), (SOURCE_CONTENT, "content"), (SOURCE_TRENDING, "trending"),
                (SOURCE_EDITORIAL, "editorial"), (SOURCE_CACHE, "cache"), (SOURCE_SEGMENT, "segment"),
                (SOURCE_POPULAR, "popular"))
ZERO_USER = np.zeros(USER_WIDTH, dtype=np.float32)
DEFAULT_RULES = SurfaceRules()


def source_names(bits: int) -> list[str]:
    return [name for bit, name in SOURCE_NAMES if bits & bit]


@dataclass
class RequestState:
    """What one request knows. Views into the snapshot are valid until the
    snapshot closes, which the servicer does after building the response."""

    tenant: "object"                 # server.runtime.TenantRuntime
    snap: "object"                   # server.store.StoreSnapshot
    user_id: str
    surface: str
    limit: int
    deadline: float                  # time.perf_counter() value
    user_row: np.ndarray = field(default_factory=lambda: ZERO_USER)  # read-only; never written
    seen: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int32))    # ring, any order
    recent: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int32))  # newest last
    known_user: bool = False
    personalized: bool = True
    session_idx: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))
    exclude_idx: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))
    anchor_idx: int = -1             # GetRelated: the anchor item
    chunk_addrs: np.ndarray | None = None
    n_items: int = 0
    explain: bool = False
    # the surface's rules with the experiment variant's overrides (server.experiments): stages read
    # these, never the config's, so a variant's rules apply everywhere in the request
    rules: SurfaceRules = DEFAULT_RULES
    experiment: str = ""             # "" = in no experiment
    variant: str = ""
    model_override: str = ""         # the variant's ranking-model version; "" = the deployed one
    segment: str = ""                # the user's named segment (server.segments); "" = none
    models: "object" = None          # server.models.selection.ModelChoice, set by the funnel before scoring
    canary_outcomes: list | None = None  # [(watch, error, rows, nonfinite)] per canary model run (server.models.canary)
    # outputs for the response and metrics
    sources_failed: list[str] = field(default_factory=list)
    filtered: dict[str, int] = field(default_factory=dict)
    candidates_retrieved: int = 0
    candidates_scored: int = 0
    stage_seconds: dict[str, float] = field(default_factory=dict)
    _affinity: np.ndarray | None = None

    def remaining(self) -> float:
        return self.deadline - time.perf_counter()

    def affinity(self) -> np.ndarray:
        """The user's category affinity normalised to sum 1 (zeros without history); computed once."""
        if self._affinity is None:
            raw = self.user_row[USER_AFFINITY:USER_AFFINITY + MAX_CATEGORIES]
            total = float(raw.sum())
            self._affinity = ((raw / total).astype(np.float32) if total > 0
                              else np.zeros(MAX_CATEGORIES, dtype=np.float32))
        return self._affinity


RECENT_SEEDS = 5  # recent items that seed the content source when a request has no session items


def request_state(snap, tenant, user_id: str, surface: str, limit: int, budget_s: float,
                  kill_switch: bool = False) -> RequestState:
    """The state of one request: the user's zero-copy row and seen ring (an unknown
    user keeps the zero row), the deadline, and whether it may be personalised.
    A user who opted out (USER_CONSENT != 1) is known but nothing of theirs is
    used: zero row, no seen ring, no recent items, not personalised, and no
    experiment assignment (the surface's plain rules). The surface's
    rules and the experiment variant come from the runtime's precompiled plan."""
    config = tenant.config
    state = RequestState(tenant=tenant, snap=snap, user_id=user_id, surface=surface or "*",
                         limit=limit or config.default_limit, deadline=time.perf_counter() + budget_s)
    value = snap.user(tenant.tenant_id, user_id) if user_id else None
    consent = True
    row = None
    if value is not None:
        state.known_user = True
        row = user_row_view(value)
        consent = bool(row[USER_CONSENT] == 1.0)
        if consent:
            state.user_row, state.seen = row, user_seen_view(value)
            state.recent = user_recent_items(value, RECENT_SEEDS)
    if tenant.segments:  # first matching named segment; its eligibility is a hard filter (filters.segment)
        state.segment = tenant.segments.classify(user_facts(row, consent, tenant.now_days()))
    state.personalized = not kill_switch and config.personalization_enabled and consent
    # an opted-out user is in no experiment (as an anonymous request): default rules, no variant
    assignment = tenant.experiments.assign(user_id if consent else "", state.surface)
    state.rules, state.experiment, state.variant, state.model_override = (
        assignment.rules, assignment.experiment, assignment.variant, assignment.model_version)
    return state
