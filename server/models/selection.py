"""Which models score a request: built once per tenant runtime, one lookup per request.

For every surface with a deployment (and "*" for the rest) the runtime holds a
:class:`SurfaceModels`: the stable and canary scorer of each kind and every
:class:`ModelChoice` they can combine into, made in advance. A request then costs
one dict lookup plus, only while a canary is deployed, one hash of the user id per
canary kind; nothing is allocated.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

BUCKETS = 10_000  # canary shares have a resolution of 0.01 %


def canary_bucket(salt: str, user_id: str) -> int:
    """0..BUCKETS-1, the same for a user as long as the deployment keeps its salt."""
    digest = hashlib.sha256(f"{salt}\x00{user_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % BUCKETS


@dataclass(frozen=True)
class ModelChoice:
    """The scorers of one request. ``version``: what FeedResponse.model_version reports
    after a full ranking ("<prerank>+<rank>", 12 hex digits each); ``prerank_version``
    after a pre-ranker-only one (degradation level 1)."""

    prerank: object = None               # server.models.runtime.Scorer
    rank: object = None
    version: str = ""
    prerank_version: str = ""
    prerank_canary: bool = False
    rank_canary: bool = False
    prerank_watch: object = None         # server.models.canary.CanaryWatch of a canary model, else None
    rank_watch: object = None

    @property
    def canary(self) -> bool:
        return self.prerank_canary or self.rank_canary


def make_choice(prerank, rank, prerank_watch=None, rank_watch=None) -> ModelChoice:
    tags = [s.version for s in (prerank, rank) if s is not None]
    return ModelChoice(prerank, rank, "+".join(tags), prerank.version if prerank is not None else "",
                       prerank_watch is not None, rank_watch is not None, prerank_watch, rank_watch)


@dataclass
class KindModels:
    """One kind on one surface: the stable scorer, and the canary with its share."""

    stable: object = None
    canary: object = None
    threshold: int = 0                   # users with bucket < threshold get the canary
    salt: str = ""
    watch: object = None

    def use_canary(self, user_id: str) -> bool:
        return (self.canary is not None and self.threshold > 0 and bool(user_id)
                and canary_bucket(self.salt, user_id) < self.threshold)


@dataclass
class SurfaceModels:
    prerank: KindModels
    rank: KindModels
    choices: dict = field(default_factory=dict)   # (prerank canary?, rank canary?) -> ModelChoice
    _overrides: dict = field(default_factory=dict)

    def __post_init__(self):
        p, r = self.prerank, self.rank
        for pc in (False, True):
            for rc in (False, True):
                self.choices[(pc, rc)] = make_choice(p.canary if pc else p.stable, r.canary if rc else r.stable,
                                                     p.watch if pc else None, r.watch if rc else None)

    def choose(self, user_id: str, override_rank=None) -> ModelChoice:
        pc = self.prerank.use_canary(user_id)
        if override_rank is not None:
            key = (pc, override_rank.version)
            choice = self._overrides.get(key)
            if choice is None:  # once per (surface, override, prerank arm) per runtime
                choice = self._overrides[key] = make_choice(self.prerank.canary if pc else self.prerank.stable,
                                                            override_rank, self.prerank.watch if pc else None)
            return choice
        return self.choices[(pc, self.rank.use_canary(user_id))]
