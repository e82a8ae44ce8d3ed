from server.pipeline.rerankers.base import Ranking, Reranker  # noqa: F401
from server.pipeline.rerankers.diversity import DiversityReranker  # noqa: F401
from server.pipeline.rerankers.editorial import EditorialBoost  # noqa: F401
from server.pipeline.rerankers.freshness import FreshnessBoost  # noqa: F401
from server.pipeline.rerankers.reasons import ReasonWriter  # noqa: F401
from server.pipeline.rerankers.sponsored import SponsoredSlots  # noqa: F401
