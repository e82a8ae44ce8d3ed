"""Named segments, compiled for serving.

A tenant's ``segments`` (server.tenancy.Segment) are rules over the user row at
request time; a user's segment is the FIRST segment, in config order, whose rule
matches, else none (""). The conditions, all of which must hold:

    top_categories     argmax of USER_AFFINITY named (lowest id on ties); "none" = no affinity
    min/max_interactions  interaction count = USER_EVENT_COUNT, or round(expm1(USER_ACTIVITY))
                       on a row built offline (both inclusive)
    min/max_skip_rate  USER_SKIP_RATE (both inclusive)
    lifecycle          new = unknown user or 0 interactions; active = days since last active
                       <= lapsed_after_days; lapsed = more (days against the tenant clock)
    consent            granted / withheld (opted out of personalisation)

Nothing of an opted-out user is used: they are matched as an unknown user (count 0,
no top category, lifecycle "new") whose consent is "withheld". Anonymous requests
(empty user id) are unknown users. Segments therefore hold for every request.

Per surface, ``SurfaceRules.segment_rules`` gives each segment its eligibility
(allowed/blocked categories, blocked items), applied as a hard filter
(server.pipeline.filters.segment) at every degradation level. The surface's rules
are chosen like the rest of SurfaceRules: the surface's own entry, else "*".

:class:`SegmentPlan` is compiled once per runtime build (server.runtime): category
names become ids and a 64-bit category mask, item ids become sorted indices, so a
request costs a few float comparisons per segment tried and one dict lookup.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from kernels.layout import (
    MAX_CATEGORIES,
    USER_ACTIVITY,
    USER_AFFINITY,
    USER_EVENT_COUNT,
    USER_LAST_ACTIVE_DAYS,
    USER_SKIP_RATE,
)
from server.tenancy import DEFAULT_SURFACE, NO_TOP_CATEGORY, Segment, SegmentRules, TenantConfig

ALL_CATEGORIES = (1 << MAX_CATEGORIES) - 1
NO_CATEGORY = -1
LIFECYCLE_NEW, LIFECYCLE_ACTIVE, LIFECYCLE_LAPSED = "new", "active", "lapsed"
NO_SEGMENT = ""
SEGMENT_LIST_PREFIX = "segment:name:"  # db lists: "segment:name:<segment>" (ops.segments, level 3)
_EMPTY_IDX = np.empty(0, dtype=np.int64)


class UserFacts(NamedTuple):
    """What segment rules read of one user (a tuple: cheap to build per request)."""

    known: bool
    consent: bool
    interactions: int
    skip_rate: float
    days_since_active: float         # inf for a user who was never active
    top_category: int                # NO_CATEGORY without any affinity

    def lifecycle(self, lapsed_after_days: float) -> str:
        if not self.known or self.interactions == 0:
            return LIFECYCLE_NEW
        return LIFECYCLE_LAPSED if self.days_since_active > lapsed_after_days else LIFECYCLE_ACTIVE


UNKNOWN_USER = UserFacts(False, True, 0, 0.0, math.inf, NO_CATEGORY)
OPTED_OUT_USER = UserFacts(False, False, 0, 0.0, math.inf, NO_CATEGORY)


def user_facts(row: np.ndarray | None, consent: bool, now_days: float) -> UserFacts:
    """The facts of a stored user row; ``row`` None = unknown user. An opted-out
    user (``consent`` False) is matched as unknown, consent withheld."""
    if not consent:
        return OPTED_OUT_USER
    if row is None:
        return UNKNOWN_USER
    count = float(row[USER_EVENT_COUNT])
    if count <= 0.0:
        count = float(round(math.expm1(float(row[USER_ACTIVITY]))))
    affinity = row[USER_AFFINITY:USER_AFFINITY + MAX_CATEGORIES]
    top = int(affinity.argmax())
    last = float(row[USER_LAST_ACTIVE_DAYS])
    return UserFacts(True, True, int(count), float(row[USER_SKIP_RATE]),
                     now_days - last if last > 0 else math.inf, top if affinity[top] > 0 else NO_CATEGORY)


class CompiledSegment:
    """One segment's rule with category names resolved to ids."""

    __slots__ = ("name", "top", "min_count", "max_count", "min_skip", "max_skip", "lifecycle", "lapsed_days",
                 "consent")

    def __init__(self, segment: Segment, category_ids: dict[str, int]):
        self.name = segment.name
        # names the catalog does not hold match nobody
        self.top = (frozenset(NO_CATEGORY if n == NO_TOP_CATEGORY else category_ids.get(n, -2)
                              for n in segment.top_categories) if segment.top_categories else None)
        self.min_count = segment.min_interactions
        self.max_count = segment.max_interactions
        self.min_skip, self.max_skip = float(segment.min_skip_rate), float(segment.max_skip_rate)
        self.lifecycle = frozenset(segment.lifecycle) if segment.lifecycle else None
        self.lapsed_days = float(segment.lapsed_after_days)
        self.consent = None if not segment.consent else segment.consent == "granted"

    def matches(self, user: UserFacts) -> bool:
        if self.consent is not None and user.consent != self.consent:
            return False
        if self.top is not None and user.top_category not in self.top:
            return False
        if user.interactions < self.min_count or (self.max_count is not None and user.interactions > self.max_count):
            return False
        if not (self.min_skip <= user.skip_rate <= self.max_skip):
            return False
        return self.lifecycle is None or user.lifecycle(self.lapsed_days) in self.lifecycle


class Eligibility(NamedTuple):
    """One segment's hard-filter rule on one surface."""

    blocked_categories: int = 0      # category mask (bit c = category id c is removed)
    denied_idx: np.ndarray = _EMPTY_IDX  # sorted int64 item indices


NO_RESTRICTION = Eligibility()


def compile_eligibility(rules: SegmentRules, category_ids: dict[str, int], resolve) -> Eligibility:
    mask = 0
    if rules.allowed_categories:
        allowed = 0
        for name in rules.allowed_categories:
            if name in category_ids:
                allowed |= 1 << category_ids[name]
        mask = ALL_CATEGORIES & ~allowed
    for name in rules.blocked_categories:
        if name in category_ids:
            mask |= 1 << category_ids[name]
    denied = resolve(rules.blocked_item_ids) if rules.blocked_item_ids else _EMPTY_IDX
    return Eligibility(mask & ALL_CATEGORIES, denied)


class SegmentPlan:
    """A tenant config's segments and per-surface segment eligibility, compiled."""

    def __init__(self, config: TenantConfig, categories: list[str], resolve=None):
        """``categories``: the tenant's category names by id; ``resolve``: item ids ->
        sorted int64 indices (ids not in the catalog dropped); None = no item lookups."""
        category_ids = {name: c for c, name in enumerate(categories[:MAX_CATEGORIES])}
        self.categories = list(categories)
        self.segments = [CompiledSegment(s, category_ids) for s in config.segments]
        resolve = resolve or (lambda ids: _EMPTY_IDX)

        def per_segment(rules) -> dict[str, Eligibility]:
            return {name: compile_eligibility(r, category_ids, resolve) for name, r in rules.segment_rules.items()}

        self._by_surface = {surface: per_segment(rules) for surface, rules in config.surfaces.items()}
        self._other = self._by_surface.get(DEFAULT_SURFACE) or {}  # any other surface: the "*" rules

    def __bool__(self) -> bool:
        return bool(self.segments)

    def classify(self, user: UserFacts) -> str:
        """The name of the first segment whose rule matches, else ""."""
        for segment in self.segments:
            if segment.matches(user):
                return segment.name
        return NO_SEGMENT

    def eligibility(self, surface: str, segment: str) -> Eligibility:
        """The segment's hard-filter rule on ``surface`` (NO_RESTRICTION without one). O(1)."""
        if not segment:
            return NO_RESTRICTION
        rules = self._by_surface.get(surface)
        if rules is None:
            rules = self._other
        return rules.get(segment, NO_RESTRICTION)

    def category_name(self, category_id: int) -> str:
        if category_id == NO_CATEGORY:
            return NO_TOP_CATEGORY
        return self.categories[category_id] if 0 <= category_id < len(self.categories) else str(category_id)
