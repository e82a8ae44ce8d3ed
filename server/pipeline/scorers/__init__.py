from server.pipeline.scorers.base import RankingUnavailable, ScoringStage  # noqa: F401
from server.pipeline.scorers.prerank import PreRanker  # noqa: F401
from server.pipeline.scorers.ranker import Ranker  # noqa: F401
