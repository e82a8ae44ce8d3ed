from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Mode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MODE_UNSPECIFIED: _ClassVar[Mode]
    MODE_PERSONALIZED: _ClassVar[Mode]
    MODE_FALLBACK: _ClassVar[Mode]

class ExperimentStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EXPERIMENT_STATUS_UNSPECIFIED: _ClassVar[ExperimentStatus]
    EXPERIMENT_RUNNING: _ClassVar[ExperimentStatus]
    EXPERIMENT_STOPPED: _ClassVar[ExperimentStatus]

class EventType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EVENT_TYPE_UNSPECIFIED: _ClassVar[EventType]
    IMPRESSION: _ClassVar[EventType]
    VIEW: _ClassVar[EventType]
    CLICK: _ClassVar[EventType]
    LIKE: _ClassVar[EventType]
    SKIP: _ClassVar[EventType]
    SHARE: _ClassVar[EventType]
    PURCHASE: _ClassVar[EventType]
    DWELL: _ClassVar[EventType]
MODE_UNSPECIFIED: Mode
MODE_PERSONALIZED: Mode
MODE_FALLBACK: Mode
EXPERIMENT_STATUS_UNSPECIFIED: ExperimentStatus
EXPERIMENT_RUNNING: ExperimentStatus
EXPERIMENT_STOPPED: ExperimentStatus
EVENT_TYPE_UNSPECIFIED: EventType
IMPRESSION: EventType
VIEW: EventType
CLICK: EventType
LIKE: EventType
SKIP: EventType
SHARE: EventType
PURCHASE: EventType
DWELL: EventType

class RequestContext(_message.Message):
    __slots__ = ("device", "session_item_ids", "session_id")
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    SESSION_ITEM_IDS_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    device: str
    session_item_ids: _containers.RepeatedScalarFieldContainer[str]
    session_id: str
    def __init__(self, device: _Optional[str] = ..., session_item_ids: _Optional[_Iterable[str]] = ..., session_id: _Optional[str] = ...) -> None: ...

class FeedRequest(_message.Message):
    __slots__ = ("user_id", "surface", "limit", "cursor", "context", "exclude_item_ids", "explain")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    SURFACE_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    EXCLUDE_ITEM_IDS_FIELD_NUMBER: _ClassVar[int]
    EXPLAIN_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    surface: str
    limit: int
    cursor: str
    context: RequestContext
    exclude_item_ids: _containers.RepeatedScalarFieldContainer[str]
    explain: bool
    def __init__(self, user_id: _Optional[str] = ..., surface: _Optional[str] = ..., limit: _Optional[int] = ..., cursor: _Optional[str] = ..., context: _Optional[_Union[RequestContext, _Mapping]] = ..., exclude_item_ids: _Optional[_Iterable[str]] = ..., explain: _Optional[bool] = ...) -> None: ...

class RelatedRequest(_message.Message):
    __slots__ = ("item_id", "user_id", "limit", "cursor", "surface")
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    SURFACE_FIELD_NUMBER: _ClassVar[int]
    item_id: str
    user_id: str
    limit: int
    cursor: str
    surface: str
    def __init__(self, item_id: _Optional[str] = ..., user_id: _Optional[str] = ..., limit: _Optional[int] = ..., cursor: _Optional[str] = ..., surface: _Optional[str] = ...) -> None: ...

class FeedItem(_message.Message):
    __slots__ = ("item_id", "score", "position", "reason", "sources", "is_sponsored", "title", "category", "maturity_rating")
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    POSITION_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    SOURCES_FIELD_NUMBER: _ClassVar[int]
    IS_SPONSORED_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    CATEGORY_FIELD_NUMBER: _ClassVar[int]
    MATURITY_RATING_FIELD_NUMBER: _ClassVar[int]
    item_id: str
    score: float
    position: int
    reason: str
    sources: _containers.RepeatedScalarFieldContainer[str]
    is_sponsored: bool
    title: str
    category: str
    maturity_rating: str
    def __init__(self, item_id: _Optional[str] = ..., score: _Optional[float] = ..., position: _Optional[int] = ..., reason: _Optional[str] = ..., sources: _Optional[_Iterable[str]] = ..., is_sponsored: _Optional[bool] = ..., title: _Optional[str] = ..., category: _Optional[str] = ..., maturity_rating: _Optional[str] = ...) -> None: ...

class FeedResponse(_message.Message):
    __slots__ = ("items", "mode", "degradation_level", "request_id", "model_version", "candidates_retrieved", "candidates_scored", "next_cursor", "server_time_us", "filtered", "sources_failed", "experiment", "variant", "config_version", "canary", "segment")
    class FilteredEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    DEGRADATION_LEVEL_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    CANDIDATES_RETRIEVED_FIELD_NUMBER: _ClassVar[int]
    CANDIDATES_SCORED_FIELD_NUMBER: _ClassVar[int]
    NEXT_CURSOR_FIELD_NUMBER: _ClassVar[int]
    SERVER_TIME_US_FIELD_NUMBER: _ClassVar[int]
    FILTERED_FIELD_NUMBER: _ClassVar[int]
    SOURCES_FAILED_FIELD_NUMBER: _ClassVar[int]
    EXPERIMENT_FIELD_NUMBER: _ClassVar[int]
    VARIANT_FIELD_NUMBER: _ClassVar[int]
    CONFIG_VERSION_FIELD_NUMBER: _ClassVar[int]
    CANARY_FIELD_NUMBER: _ClassVar[int]
    SEGMENT_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[FeedItem]
    mode: Mode
    degradation_level: int
    request_id: str
    model_version: str
    candidates_retrieved: int
    candidates_scored: int
    next_cursor: str
    server_time_us: int
    filtered: _containers.ScalarMap[str, int]
    sources_failed: _containers.RepeatedScalarFieldContainer[str]
    experiment: str
    variant: str
    config_version: int
    canary: bool
    segment: str
    def __init__(self, items: _Optional[_Iterable[_Union[FeedItem, _Mapping]]] = ..., mode: _Optional[_Union[Mode, str]] = ..., degradation_level: _Optional[int] = ..., request_id: _Optional[str] = ..., model_version: _Optional[str] = ..., candidates_retrieved: _Optional[int] = ..., candidates_scored: _Optional[int] = ..., next_cursor: _Optional[str] = ..., server_time_us: _Optional[int] = ..., filtered: _Optional[_Mapping[str, int]] = ..., sources_failed: _Optional[_Iterable[str]] = ..., experiment: _Optional[str] = ..., variant: _Optional[str] = ..., config_version: _Optional[int] = ..., canary: _Optional[bool] = ..., segment: _Optional[str] = ...) -> None: ...

class SurfaceRules(_message.Message):
    __slots__ = ("max_per_category", "max_streak", "freshness_weight", "sponsored_positions", "editorial_weight", "frequency_cap", "campaign_frequency_cap", "frequency_window_s", "segment_rules")
    class SegmentRulesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: SegmentRules
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[SegmentRules, _Mapping]] = ...) -> None: ...
    MAX_PER_CATEGORY_FIELD_NUMBER: _ClassVar[int]
    MAX_STREAK_FIELD_NUMBER: _ClassVar[int]
    FRESHNESS_WEIGHT_FIELD_NUMBER: _ClassVar[int]
    SPONSORED_POSITIONS_FIELD_NUMBER: _ClassVar[int]
    EDITORIAL_WEIGHT_FIELD_NUMBER: _ClassVar[int]
    FREQUENCY_CAP_FIELD_NUMBER: _ClassVar[int]
    CAMPAIGN_FREQUENCY_CAP_FIELD_NUMBER: _ClassVar[int]
    FREQUENCY_WINDOW_S_FIELD_NUMBER: _ClassVar[int]
    SEGMENT_RULES_FIELD_NUMBER: _ClassVar[int]
    max_per_category: int
    max_streak: int
    freshness_weight: float
    sponsored_positions: _containers.RepeatedScalarFieldContainer[int]
    editorial_weight: float
    frequency_cap: int
    campaign_frequency_cap: int
    frequency_window_s: int
    segment_rules: _containers.MessageMap[str, SegmentRules]
    def __init__(self, max_per_category: _Optional[int] = ..., max_streak: _Optional[int] = ..., freshness_weight: _Optional[float] = ..., sponsored_positions: _Optional[_Iterable[int]] = ..., editorial_weight: _Optional[float] = ..., frequency_cap: _Optional[int] = ..., campaign_frequency_cap: _Optional[int] = ..., frequency_window_s: _Optional[int] = ..., segment_rules: _Optional[_Mapping[str, SegmentRules]] = ...) -> None: ...

class SegmentRules(_message.Message):
    __slots__ = ("allowed_categories", "blocked_categories", "blocked_item_ids")
    ALLOWED_CATEGORIES_FIELD_NUMBER: _ClassVar[int]
    BLOCKED_CATEGORIES_FIELD_NUMBER: _ClassVar[int]
    BLOCKED_ITEM_IDS_FIELD_NUMBER: _ClassVar[int]
    allowed_categories: _containers.RepeatedScalarFieldContainer[str]
    blocked_categories: _containers.RepeatedScalarFieldContainer[str]
    blocked_item_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, allowed_categories: _Optional[_Iterable[str]] = ..., blocked_categories: _Optional[_Iterable[str]] = ..., blocked_item_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class Segment(_message.Message):
    __slots__ = ("name", "top_categories", "min_interactions", "max_interactions", "min_skip_rate", "max_skip_rate", "lifecycle", "lapsed_after_days", "consent")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TOP_CATEGORIES_FIELD_NUMBER: _ClassVar[int]
    MIN_INTERACTIONS_FIELD_NUMBER: _ClassVar[int]
    MAX_INTERACTIONS_FIELD_NUMBER: _ClassVar[int]
    MIN_SKIP_RATE_FIELD_NUMBER: _ClassVar[int]
    MAX_SKIP_RATE_FIELD_NUMBER: _ClassVar[int]
    LIFECYCLE_FIELD_NUMBER: _ClassVar[int]
    LAPSED_AFTER_DAYS_FIELD_NUMBER: _ClassVar[int]
    CONSENT_FIELD_NUMBER: _ClassVar[int]
    name: str
    top_categories: _containers.RepeatedScalarFieldContainer[str]
    min_interactions: int
    max_interactions: int
    min_skip_rate: float
    max_skip_rate: float
    lifecycle: _containers.RepeatedScalarFieldContainer[str]
    lapsed_after_days: int
    consent: str
    def __init__(self, name: _Optional[str] = ..., top_categories: _Optional[_Iterable[str]] = ..., min_interactions: _Optional[int] = ..., max_interactions: _Optional[int] = ..., min_skip_rate: _Optional[float] = ..., max_skip_rate: _Optional[float] = ..., lifecycle: _Optional[_Iterable[str]] = ..., lapsed_after_days: _Optional[int] = ..., consent: _Optional[str] = ...) -> None: ...

class Tenant(_message.Message):
    __slots__ = ("tenant_id", "name", "maturity_policy", "personalization_enabled", "default_limit", "max_limit", "latency_budget_ms", "blocked_item_ids", "blocked_categories", "boosted_item_ids", "surfaces", "linear_model_json", "version", "api_keys", "rotate_keys", "api_key_count", "experiments", "segments", "affinity_half_life_days", "trending_half_life_days")
    class SurfacesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: SurfaceRules
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[SurfaceRules, _Mapping]] = ...) -> None: ...
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    MATURITY_POLICY_FIELD_NUMBER: _ClassVar[int]
    PERSONALIZATION_ENABLED_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_LIMIT_FIELD_NUMBER: _ClassVar[int]
    MAX_LIMIT_FIELD_NUMBER: _ClassVar[int]
    LATENCY_BUDGET_MS_FIELD_NUMBER: _ClassVar[int]
    BLOCKED_ITEM_IDS_FIELD_NUMBER: _ClassVar[int]
    BLOCKED_CATEGORIES_FIELD_NUMBER: _ClassVar[int]
    BOOSTED_ITEM_IDS_FIELD_NUMBER: _ClassVar[int]
    SURFACES_FIELD_NUMBER: _ClassVar[int]
    LINEAR_MODEL_JSON_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    API_KEYS_FIELD_NUMBER: _ClassVar[int]
    ROTATE_KEYS_FIELD_NUMBER: _ClassVar[int]
    API_KEY_COUNT_FIELD_NUMBER: _ClassVar[int]
    EXPERIMENTS_FIELD_NUMBER: _ClassVar[int]
    SEGMENTS_FIELD_NUMBER: _ClassVar[int]
    AFFINITY_HALF_LIFE_DAYS_FIELD_NUMBER: _ClassVar[int]
    TRENDING_HALF_LIFE_DAYS_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    name: str
    maturity_policy: str
    personalization_enabled: bool
    default_limit: int
    max_limit: int
    latency_budget_ms: int
    blocked_item_ids: _containers.RepeatedScalarFieldContainer[str]
    blocked_categories: _containers.RepeatedScalarFieldContainer[str]
    boosted_item_ids: _containers.RepeatedScalarFieldContainer[str]
    surfaces: _containers.MessageMap[str, SurfaceRules]
    linear_model_json: str
    version: int
    api_keys: _containers.RepeatedScalarFieldContainer[str]
    rotate_keys: bool
    api_key_count: int
    experiments: _containers.RepeatedCompositeFieldContainer[Experiment]
    segments: _containers.RepeatedCompositeFieldContainer[Segment]
    affinity_half_life_days: float
    trending_half_life_days: float
    def __init__(self, tenant_id: _Optional[str] = ..., name: _Optional[str] = ..., maturity_policy: _Optional[str] = ..., personalization_enabled: _Optional[bool] = ..., default_limit: _Optional[int] = ..., max_limit: _Optional[int] = ..., latency_budget_ms: _Optional[int] = ..., blocked_item_ids: _Optional[_Iterable[str]] = ..., blocked_categories: _Optional[_Iterable[str]] = ..., boosted_item_ids: _Optional[_Iterable[str]] = ..., surfaces: _Optional[_Mapping[str, SurfaceRules]] = ..., linear_model_json: _Optional[str] = ..., version: _Optional[int] = ..., api_keys: _Optional[_Iterable[str]] = ..., rotate_keys: _Optional[bool] = ..., api_key_count: _Optional[int] = ..., experiments: _Optional[_Iterable[_Union[Experiment, _Mapping]]] = ..., segments: _Optional[_Iterable[_Union[Segment, _Mapping]]] = ..., affinity_half_life_days: _Optional[float] = ..., trending_half_life_days: _Optional[float] = ...) -> None: ...

class Experiment(_message.Message):
    __slots__ = ("name", "surface", "salt", "status", "variants")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SURFACE_FIELD_NUMBER: _ClassVar[int]
    SALT_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    VARIANTS_FIELD_NUMBER: _ClassVar[int]
    name: str
    surface: str
    salt: str
    status: ExperimentStatus
    variants: _containers.RepeatedCompositeFieldContainer[Variant]
    def __init__(self, name: _Optional[str] = ..., surface: _Optional[str] = ..., salt: _Optional[str] = ..., status: _Optional[_Union[ExperimentStatus, str]] = ..., variants: _Optional[_Iterable[_Union[Variant, _Mapping]]] = ...) -> None: ...

class Variant(_message.Message):
    __slots__ = ("name", "weight", "model_version", "rules")
    NAME_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    RULES_FIELD_NUMBER: _ClassVar[int]
    name: str
    weight: int
    model_version: str
    rules: RuleOverrides
    def __init__(self, name: _Optional[str] = ..., weight: _Optional[int] = ..., model_version: _Optional[str] = ..., rules: _Optional[_Union[RuleOverrides, _Mapping]] = ...) -> None: ...

class RuleOverrides(_message.Message):
    __slots__ = ("max_per_category", "max_streak", "freshness_weight", "sponsored_positions", "editorial_weight", "frequency_cap", "campaign_frequency_cap", "frequency_window_s")
    MAX_PER_CATEGORY_FIELD_NUMBER: _ClassVar[int]
    MAX_STREAK_FIELD_NUMBER: _ClassVar[int]
    FRESHNESS_WEIGHT_FIELD_NUMBER: _ClassVar[int]
    SPONSORED_POSITIONS_FIELD_NUMBER: _ClassVar[int]
    EDITORIAL_WEIGHT_FIELD_NUMBER: _ClassVar[int]
    FREQUENCY_CAP_FIELD_NUMBER: _ClassVar[int]
    CAMPAIGN_FREQUENCY_CAP_FIELD_NUMBER: _ClassVar[int]
    FREQUENCY_WINDOW_S_FIELD_NUMBER: _ClassVar[int]
    max_per_category: int
    max_streak: int
    freshness_weight: float
    sponsored_positions: SponsoredPositions
    editorial_weight: float
    frequency_cap: int
    campaign_frequency_cap: int
    frequency_window_s: int
    def __init__(self, max_per_category: _Optional[int] = ..., max_streak: _Optional[int] = ..., freshness_weight: _Optional[float] = ..., sponsored_positions: _Optional[_Union[SponsoredPositions, _Mapping]] = ..., editorial_weight: _Optional[float] = ..., frequency_cap: _Optional[int] = ..., campaign_frequency_cap: _Optional[int] = ..., frequency_window_s: _Optional[int] = ...) -> None: ...

class SponsoredPositions(_message.Message):
    __slots__ = ("positions",)
    POSITIONS_FIELD_NUMBER: _ClassVar[int]
    positions: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, positions: _Optional[_Iterable[int]] = ...) -> None: ...

class UpsertTenantRequest(_message.Message):
    __slots__ = ("tenant",)
    TENANT_FIELD_NUMBER: _ClassVar[int]
    tenant: Tenant
    def __init__(self, tenant: _Optional[_Union[Tenant, _Mapping]] = ...) -> None: ...

class GetTenantRequest(_message.Message):
    __slots__ = ("tenant_id",)
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    def __init__(self, tenant_id: _Optional[str] = ...) -> None: ...

class RestoreConfigRequest(_message.Message):
    __slots__ = ("tenant_id", "version")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    version: int
    def __init__(self, tenant_id: _Optional[str] = ..., version: _Optional[int] = ...) -> None: ...

class ConfigVersion(_message.Message):
    __slots__ = ("version", "updated_at", "summary")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    version: int
    updated_at: float
    summary: str
    def __init__(self, version: _Optional[int] = ..., updated_at: _Optional[float] = ..., summary: _Optional[str] = ...) -> None: ...

class ConfigVersions(_message.Message):
    __slots__ = ("tenant_id", "current_version", "versions", "truncated")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    CURRENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    current_version: int
    versions: _containers.RepeatedCompositeFieldContainer[ConfigVersion]
    truncated: bool
    def __init__(self, tenant_id: _Optional[str] = ..., current_version: _Optional[int] = ..., versions: _Optional[_Iterable[_Union[ConfigVersion, _Mapping]]] = ..., truncated: _Optional[bool] = ...) -> None: ...

class Item(_message.Message):
    __slots__ = ("tenant_id", "item_id", "title", "categories", "maturity_rating", "created_at_s", "active", "sponsored", "editorial_boost", "campaign_id")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    CATEGORIES_FIELD_NUMBER: _ClassVar[int]
    MATURITY_RATING_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_S_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_FIELD_NUMBER: _ClassVar[int]
    SPONSORED_FIELD_NUMBER: _ClassVar[int]
    EDITORIAL_BOOST_FIELD_NUMBER: _ClassVar[int]
    CAMPAIGN_ID_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    item_id: str
    title: str
    categories: _containers.RepeatedScalarFieldContainer[str]
    maturity_rating: str
    created_at_s: int
    active: bool
    sponsored: bool
    editorial_boost: float
    campaign_id: str
    def __init__(self, tenant_id: _Optional[str] = ..., item_id: _Optional[str] = ..., title: _Optional[str] = ..., categories: _Optional[_Iterable[str]] = ..., maturity_rating: _Optional[str] = ..., created_at_s: _Optional[int] = ..., active: _Optional[bool] = ..., sponsored: _Optional[bool] = ..., editorial_boost: _Optional[float] = ..., campaign_id: _Optional[str] = ...) -> None: ...

class UpsertItemsResponse(_message.Message):
    __slots__ = ("inserted", "updated", "errors")
    INSERTED_FIELD_NUMBER: _ClassVar[int]
    UPDATED_FIELD_NUMBER: _ClassVar[int]
    ERRORS_FIELD_NUMBER: _ClassVar[int]
    inserted: int
    updated: int
    errors: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, inserted: _Optional[int] = ..., updated: _Optional[int] = ..., errors: _Optional[_Iterable[str]] = ...) -> None: ...

class ItemRef(_message.Message):
    __slots__ = ("tenant_id", "item_id")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    item_id: str
    def __init__(self, tenant_id: _Optional[str] = ..., item_id: _Optional[str] = ...) -> None: ...

class ItemChange(_message.Message):
    __slots__ = ("item_id", "changed")
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    CHANGED_FIELD_NUMBER: _ClassVar[int]
    item_id: str
    changed: bool
    def __init__(self, item_id: _Optional[str] = ..., changed: _Optional[bool] = ...) -> None: ...

class UserRef(_message.Message):
    __slots__ = ("tenant_id", "user_id")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    user_id: str
    def __init__(self, tenant_id: _Optional[str] = ..., user_id: _Optional[str] = ...) -> None: ...

class ConsentRequest(_message.Message):
    __slots__ = ("tenant_id", "user_id", "personalized")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    PERSONALIZED_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    user_id: str
    personalized: bool
    def __init__(self, tenant_id: _Optional[str] = ..., user_id: _Optional[str] = ..., personalized: _Optional[bool] = ...) -> None: ...

class UserErasure(_message.Message):
    __slots__ = ("user_id", "had_features", "events_purged", "outbox_removed", "erased_through_seq", "erased_at_ms", "decisions_purged")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    HAD_FEATURES_FIELD_NUMBER: _ClassVar[int]
    EVENTS_PURGED_FIELD_NUMBER: _ClassVar[int]
    OUTBOX_REMOVED_FIELD_NUMBER: _ClassVar[int]
    ERASED_THROUGH_SEQ_FIELD_NUMBER: _ClassVar[int]
    ERASED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    DECISIONS_PURGED_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    had_features: bool
    events_purged: int
    outbox_removed: int
    erased_through_seq: int
    erased_at_ms: int
    decisions_purged: int
    def __init__(self, user_id: _Optional[str] = ..., had_features: _Optional[bool] = ..., events_purged: _Optional[int] = ..., outbox_removed: _Optional[int] = ..., erased_through_seq: _Optional[int] = ..., erased_at_ms: _Optional[int] = ..., decisions_purged: _Optional[int] = ...) -> None: ...

class CategoryAffinity(_message.Message):
    __slots__ = ("category", "weight")
    CATEGORY_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    category: str
    weight: float
    def __init__(self, category: _Optional[str] = ..., weight: _Optional[float] = ...) -> None: ...

class Event(_message.Message):
    __slots__ = ("event_id", "user_id", "item_id", "type", "timestamp_ms", "watch_time_ms", "request_id", "position", "surface", "session_id")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_MS_FIELD_NUMBER: _ClassVar[int]
    WATCH_TIME_MS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    POSITION_FIELD_NUMBER: _ClassVar[int]
    SURFACE_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    user_id: str
    item_id: str
    type: EventType
    timestamp_ms: int
    watch_time_ms: int
    request_id: str
    position: int
    surface: str
    session_id: str
    def __init__(self, event_id: _Optional[str] = ..., user_id: _Optional[str] = ..., item_id: _Optional[str] = ..., type: _Optional[_Union[EventType, str]] = ..., timestamp_ms: _Optional[int] = ..., watch_time_ms: _Optional[int] = ..., request_id: _Optional[str] = ..., position: _Optional[int] = ..., surface: _Optional[str] = ..., session_id: _Optional[str] = ...) -> None: ...

class IngestRequest(_message.Message):
    __slots__ = ("events",)
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[Event]
    def __init__(self, events: _Optional[_Iterable[_Union[Event, _Mapping]]] = ...) -> None: ...

class RejectedEvent(_message.Message):
    __slots__ = ("index", "reason")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    index: int
    reason: str
    def __init__(self, index: _Optional[int] = ..., reason: _Optional[str] = ...) -> None: ...

class IngestResponse(_message.Message):
    __slots__ = ("accepted", "spooled", "rejected", "duplicates")
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    SPOOLED_FIELD_NUMBER: _ClassVar[int]
    REJECTED_FIELD_NUMBER: _ClassVar[int]
    DUPLICATES_FIELD_NUMBER: _ClassVar[int]
    accepted: int
    spooled: int
    rejected: _containers.RepeatedCompositeFieldContainer[RejectedEvent]
    duplicates: int
    def __init__(self, accepted: _Optional[int] = ..., spooled: _Optional[int] = ..., rejected: _Optional[_Iterable[_Union[RejectedEvent, _Mapping]]] = ..., duplicates: _Optional[int] = ...) -> None: ...

class UserSegment(_message.Message):
    __slots__ = ("user_id", "segment", "known", "personalization_consent", "top_category", "interactions", "skip_rate", "days_since_active")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    SEGMENT_FIELD_NUMBER: _ClassVar[int]
    KNOWN_FIELD_NUMBER: _ClassVar[int]
    PERSONALIZATION_CONSENT_FIELD_NUMBER: _ClassVar[int]
    TOP_CATEGORY_FIELD_NUMBER: _ClassVar[int]
    INTERACTIONS_FIELD_NUMBER: _ClassVar[int]
    SKIP_RATE_FIELD_NUMBER: _ClassVar[int]
    DAYS_SINCE_ACTIVE_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    segment: str
    known: bool
    personalization_consent: bool
    top_category: str
    interactions: int
    skip_rate: float
    days_since_active: float
    def __init__(self, user_id: _Optional[str] = ..., segment: _Optional[str] = ..., known: _Optional[bool] = ..., personalization_consent: _Optional[bool] = ..., top_category: _Optional[str] = ..., interactions: _Optional[int] = ..., skip_rate: _Optional[float] = ..., days_since_active: _Optional[float] = ...) -> None: ...

class UserSignals(_message.Message):
    __slots__ = ("user_id", "known", "activity", "skip_rate", "last_active_day", "personalization_consent", "has_embedding", "top_categories", "recent_item_ids", "session_item_ids")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    KNOWN_FIELD_NUMBER: _ClassVar[int]
    ACTIVITY_FIELD_NUMBER: _ClassVar[int]
    SKIP_RATE_FIELD_NUMBER: _ClassVar[int]
    LAST_ACTIVE_DAY_FIELD_NUMBER: _ClassVar[int]
    PERSONALIZATION_CONSENT_FIELD_NUMBER: _ClassVar[int]
    HAS_EMBEDDING_FIELD_NUMBER: _ClassVar[int]
    TOP_CATEGORIES_FIELD_NUMBER: _ClassVar[int]
    RECENT_ITEM_IDS_FIELD_NUMBER: _ClassVar[int]
    SESSION_ITEM_IDS_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    known: bool
    activity: float
    skip_rate: float
    last_active_day: int
    personalization_consent: bool
    has_embedding: bool
    top_categories: _containers.RepeatedCompositeFieldContainer[CategoryAffinity]
    recent_item_ids: _containers.RepeatedScalarFieldContainer[str]
    session_item_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, user_id: _Optional[str] = ..., known: _Optional[bool] = ..., activity: _Optional[float] = ..., skip_rate: _Optional[float] = ..., last_active_day: _Optional[int] = ..., personalization_consent: _Optional[bool] = ..., has_embedding: _Optional[bool] = ..., top_categories: _Optional[_Iterable[_Union[CategoryAffinity, _Mapping]]] = ..., recent_item_ids: _Optional[_Iterable[str]] = ..., session_item_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class Decision(_message.Message):
    __slots__ = ("request_id", "tenant_id", "user_id", "user_hash", "surface", "feed", "related", "items", "model_version", "config_version", "experiment", "variant", "degradation_level", "mode", "latency_us", "served_at_ms", "canary", "segment")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    USER_HASH_FIELD_NUMBER: _ClassVar[int]
    SURFACE_FIELD_NUMBER: _ClassVar[int]
    FEED_FIELD_NUMBER: _ClassVar[int]
    RELATED_FIELD_NUMBER: _ClassVar[int]
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    CONFIG_VERSION_FIELD_NUMBER: _ClassVar[int]
    EXPERIMENT_FIELD_NUMBER: _ClassVar[int]
    VARIANT_FIELD_NUMBER: _ClassVar[int]
    DEGRADATION_LEVEL_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    LATENCY_US_FIELD_NUMBER: _ClassVar[int]
    SERVED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    CANARY_FIELD_NUMBER: _ClassVar[int]
    SEGMENT_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    tenant_id: str
    user_id: str
    user_hash: str
    surface: str
    feed: FeedRequest
    related: RelatedRequest
    items: _containers.RepeatedCompositeFieldContainer[FeedItem]
    model_version: str
    config_version: int
    experiment: str
    variant: str
    degradation_level: int
    mode: Mode
    latency_us: int
    served_at_ms: int
    canary: bool
    segment: str
    def __init__(self, request_id: _Optional[str] = ..., tenant_id: _Optional[str] = ..., user_id: _Optional[str] = ..., user_hash: _Optional[str] = ..., surface: _Optional[str] = ..., feed: _Optional[_Union[FeedRequest, _Mapping]] = ..., related: _Optional[_Union[RelatedRequest, _Mapping]] = ..., items: _Optional[_Iterable[_Union[FeedItem, _Mapping]]] = ..., model_version: _Optional[str] = ..., config_version: _Optional[int] = ..., experiment: _Optional[str] = ..., variant: _Optional[str] = ..., degradation_level: _Optional[int] = ..., mode: _Optional[_Union[Mode, str]] = ..., latency_us: _Optional[int] = ..., served_at_ms: _Optional[int] = ..., canary: _Optional[bool] = ..., segment: _Optional[str] = ...) -> None: ...

class BatchPlanRequest(_message.Message):
    __slots__ = ("tenant_id", "surface", "segment", "limit", "max_users", "valid_hours")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    SURFACE_FIELD_NUMBER: _ClassVar[int]
    SEGMENT_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    MAX_USERS_FIELD_NUMBER: _ClassVar[int]
    VALID_HOURS_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    surface: str
    segment: str
    limit: int
    max_users: int
    valid_hours: int
    def __init__(self, tenant_id: _Optional[str] = ..., surface: _Optional[str] = ..., segment: _Optional[str] = ..., limit: _Optional[int] = ..., max_users: _Optional[int] = ..., valid_hours: _Optional[int] = ...) -> None: ...

class BatchPlanRow(_message.Message):
    __slots__ = ("user_id", "surface", "items", "model_version", "config_version", "degradation_level", "generated_at_ms", "valid_until_ms")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    SURFACE_FIELD_NUMBER: _ClassVar[int]
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    CONFIG_VERSION_FIELD_NUMBER: _ClassVar[int]
    DEGRADATION_LEVEL_FIELD_NUMBER: _ClassVar[int]
    GENERATED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    VALID_UNTIL_MS_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    surface: str
    items: _containers.RepeatedCompositeFieldContainer[FeedItem]
    model_version: str
    config_version: int
    degradation_level: int
    generated_at_ms: int
    valid_until_ms: int
    def __init__(self, user_id: _Optional[str] = ..., surface: _Optional[str] = ..., items: _Optional[_Iterable[_Union[FeedItem, _Mapping]]] = ..., model_version: _Optional[str] = ..., config_version: _Optional[int] = ..., degradation_level: _Optional[int] = ..., generated_at_ms: _Optional[int] = ..., valid_until_ms: _Optional[int] = ...) -> None: ...

class ModelChunk(_message.Message):
    __slots__ = ("tenant_id", "kind", "features", "uploaded_by", "metrics_json", "data")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    UPLOADED_BY_FIELD_NUMBER: _ClassVar[int]
    METRICS_JSON_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    kind: str
    features: _containers.RepeatedScalarFieldContainer[str]
    uploaded_by: str
    metrics_json: str
    data: bytes
    def __init__(self, tenant_id: _Optional[str] = ..., kind: _Optional[str] = ..., features: _Optional[_Iterable[str]] = ..., uploaded_by: _Optional[str] = ..., metrics_json: _Optional[str] = ..., data: _Optional[bytes] = ...) -> None: ...

class IndexChunk(_message.Message):
    __slots__ = ("tenant_id", "kind", "data")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    kind: str
    data: bytes
    def __init__(self, tenant_id: _Optional[str] = ..., kind: _Optional[str] = ..., data: _Optional[bytes] = ...) -> None: ...

class IndexInfo(_message.Message):
    __slots__ = ("tenant_id", "kind", "version", "count", "metric")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    METRIC_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    kind: str
    version: str
    count: int
    metric: str
    def __init__(self, tenant_id: _Optional[str] = ..., kind: _Optional[str] = ..., version: _Optional[str] = ..., count: _Optional[int] = ..., metric: _Optional[str] = ...) -> None: ...

class ModelInfo(_message.Message):
    __slots__ = ("tenant_id", "version", "kind", "features", "uploaded_by", "uploaded_at_s", "metrics_json", "size_bytes", "created")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    UPLOADED_BY_FIELD_NUMBER: _ClassVar[int]
    UPLOADED_AT_S_FIELD_NUMBER: _ClassVar[int]
    METRICS_JSON_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    version: str
    kind: str
    features: _containers.RepeatedScalarFieldContainer[str]
    uploaded_by: str
    uploaded_at_s: float
    metrics_json: str
    size_bytes: int
    created: bool
    def __init__(self, tenant_id: _Optional[str] = ..., version: _Optional[str] = ..., kind: _Optional[str] = ..., features: _Optional[_Iterable[str]] = ..., uploaded_by: _Optional[str] = ..., uploaded_at_s: _Optional[float] = ..., metrics_json: _Optional[str] = ..., size_bytes: _Optional[int] = ..., created: _Optional[bool] = ...) -> None: ...

class ListModelsRequest(_message.Message):
    __slots__ = ("tenant_id", "kind")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    kind: str
    def __init__(self, tenant_id: _Optional[str] = ..., kind: _Optional[str] = ...) -> None: ...

class ModelList(_message.Message):
    __slots__ = ("models",)
    MODELS_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[ModelInfo]
    def __init__(self, models: _Optional[_Iterable[_Union[ModelInfo, _Mapping]]] = ...) -> None: ...

class Guardrails(_message.Message):
    __slots__ = ("max_error_rate", "max_nan_rate", "max_p99_ms", "min_requests")
    MAX_ERROR_RATE_FIELD_NUMBER: _ClassVar[int]
    MAX_NAN_RATE_FIELD_NUMBER: _ClassVar[int]
    MAX_P99_MS_FIELD_NUMBER: _ClassVar[int]
    MIN_REQUESTS_FIELD_NUMBER: _ClassVar[int]
    max_error_rate: float
    max_nan_rate: float
    max_p99_ms: float
    min_requests: int
    def __init__(self, max_error_rate: _Optional[float] = ..., max_nan_rate: _Optional[float] = ..., max_p99_ms: _Optional[float] = ..., min_requests: _Optional[int] = ...) -> None: ...

class DeployModelRequest(_message.Message):
    __slots__ = ("tenant_id", "surface", "kind", "version", "canary_percent", "guardrails", "actor", "reason")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    SURFACE_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    CANARY_PERCENT_FIELD_NUMBER: _ClassVar[int]
    GUARDRAILS_FIELD_NUMBER: _ClassVar[int]
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    surface: str
    kind: str
    version: str
    canary_percent: float
    guardrails: Guardrails
    actor: str
    reason: str
    def __init__(self, tenant_id: _Optional[str] = ..., surface: _Optional[str] = ..., kind: _Optional[str] = ..., version: _Optional[str] = ..., canary_percent: _Optional[float] = ..., guardrails: _Optional[_Union[Guardrails, _Mapping]] = ..., actor: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class RampModelRequest(_message.Message):
    __slots__ = ("tenant_id", "surface", "kind", "percent", "actor", "reason")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    SURFACE_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    PERCENT_FIELD_NUMBER: _ClassVar[int]
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    surface: str
    kind: str
    percent: float
    actor: str
    reason: str
    def __init__(self, tenant_id: _Optional[str] = ..., surface: _Optional[str] = ..., kind: _Optional[str] = ..., percent: _Optional[float] = ..., actor: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class RollbackModelRequest(_message.Message):
    __slots__ = ("tenant_id", "surface", "kind", "actor", "reason")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    SURFACE_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    surface: str
    kind: str
    actor: str
    reason: str
    def __init__(self, tenant_id: _Optional[str] = ..., surface: _Optional[str] = ..., kind: _Optional[str] = ..., actor: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class DeployEvent(_message.Message):
    __slots__ = ("at_s", "action", "actor", "reason", "stable", "canary", "canary_percent", "dropped", "measured_json")
    AT_S_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    STABLE_FIELD_NUMBER: _ClassVar[int]
    CANARY_FIELD_NUMBER: _ClassVar[int]
    CANARY_PERCENT_FIELD_NUMBER: _ClassVar[int]
    DROPPED_FIELD_NUMBER: _ClassVar[int]
    MEASURED_JSON_FIELD_NUMBER: _ClassVar[int]
    at_s: float
    action: str
    actor: str
    reason: str
    stable: str
    canary: str
    canary_percent: float
    dropped: str
    measured_json: str
    def __init__(self, at_s: _Optional[float] = ..., action: _Optional[str] = ..., actor: _Optional[str] = ..., reason: _Optional[str] = ..., stable: _Optional[str] = ..., canary: _Optional[str] = ..., canary_percent: _Optional[float] = ..., dropped: _Optional[str] = ..., measured_json: _Optional[str] = ...) -> None: ...

class Deployment(_message.Message):
    __slots__ = ("tenant_id", "surface", "kind", "stable", "canary", "canary_percent", "guardrails", "history")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    SURFACE_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    STABLE_FIELD_NUMBER: _ClassVar[int]
    CANARY_FIELD_NUMBER: _ClassVar[int]
    CANARY_PERCENT_FIELD_NUMBER: _ClassVar[int]
    GUARDRAILS_FIELD_NUMBER: _ClassVar[int]
    HISTORY_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    surface: str
    kind: str
    stable: str
    canary: str
    canary_percent: float
    guardrails: Guardrails
    history: _containers.RepeatedCompositeFieldContainer[DeployEvent]
    def __init__(self, tenant_id: _Optional[str] = ..., surface: _Optional[str] = ..., kind: _Optional[str] = ..., stable: _Optional[str] = ..., canary: _Optional[str] = ..., canary_percent: _Optional[float] = ..., guardrails: _Optional[_Union[Guardrails, _Mapping]] = ..., history: _Optional[_Iterable[_Union[DeployEvent, _Mapping]]] = ...) -> None: ...

class DeploymentList(_message.Message):
    __slots__ = ("deployments",)
    DEPLOYMENTS_FIELD_NUMBER: _ClassVar[int]
    deployments: _containers.RepeatedCompositeFieldContainer[Deployment]
    def __init__(self, deployments: _Optional[_Iterable[_Union[Deployment, _Mapping]]] = ...) -> None: ...
