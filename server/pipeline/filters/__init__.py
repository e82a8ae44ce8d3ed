from server.pipeline.filters.base import FilterOutcome, FilterPlan, HardFilter, count_removals  # noqa: F401
from server.pipeline.filters.blocked import BlockedFilter  # noqa: F401
from server.pipeline.filters.capped import FrequencyCapFilter  # noqa: F401
from server.pipeline.filters.excluded import ExcludedFilter  # noqa: F401
from server.pipeline.filters.inactive import InactiveFilter  # noqa: F401
from server.pipeline.filters.maturity import MaturityFilter  # noqa: F401
from server.pipeline.filters.seen import SeenFilter  # noqa: F401
from server.pipeline.filters.segment import SegmentFilter  # noqa: F401
