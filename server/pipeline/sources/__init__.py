from server.pipeline.sources.base import CandidateSource, SourceResult  # noqa: F401
from server.pipeline.sources.cf import CollaborativeSource  # noqa: F401
from server.pipeline.sources.content import ContentSource  # noqa: F401
from server.pipeline.sources.editorial import EditorialSource  # noqa: F401
from server.pipeline.sources.trending import TrendingSource  # noqa: F401
