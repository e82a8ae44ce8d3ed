"""The default funnel, declared in one place."""

from server.pipeline.filters import (
    BlockedFilter,
    ExcludedFilter,
    FrequencyCapFilter,
    InactiveFilter,
    MaturityFilter,
    SeenFilter,
    SegmentFilter,
)
from server.pipeline.funnel import Funnel, RecentRankings
from server.pipeline.rerankers import (
    DiversityReranker,
    EditorialBoost,
    FreshnessBoost,
    ReasonWriter,
    SponsoredSlots,
)
from server.pipeline.scorers import PreRanker, Ranker
from server.pipeline.sources import CollaborativeSource, ContentSource, EditorialSource, TrendingSource


def default_funnel(metrics=None, cache: RecentRankings | None = None) -> Funnel:
    return Funnel(
        # sources run in order; an error skips one (fail open), a budget overrun is counted, and none
        # starts once the request deadline has passed
        sources=[
            CollaborativeSource(k=500, budget_ms=8.0, cache_entries=10_000),
            ContentSource(k=300, budget_ms=5.0, cache_entries=10_000),
            TrendingSource(k=200, budget_ms=2.0),
            EditorialSource(k=100, budget_ms=2.0),
        ],
        # one kernel pass applies them all, to ranked and fallback lists alike; fail closed
        filters=[InactiveFilter(), MaturityFilter(), BlockedFilter(), SegmentFilter(), SeenFilter(),
                 ExcludedFilter(), FrequencyCapFilter()],
        prerank=PreRanker(keep=300),
        ranker=Ranker(),
        # order matters: editorial adjusts scores, freshness adjusts and re-sorts, diversity pages the
        # sorted list, slots go into pages, reasons see the final placement
        rerankers=[EditorialBoost(), FreshnessBoost(), DiversityReranker(), SponsoredSlots(), ReasonWriter()],
        cache=cache,
        metrics=metrics,
    )
