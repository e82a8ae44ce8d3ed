"""Fixed-width row layouts shared by the store and the kernels.

Item and user features live in LMDB as float32 rows so the kernels can read
them straight out of the memory map. Integer fields (category, maturity) are
stored as float32; every value used here is exact in float32 (< 2**24).

Kernels are the innermost dependency of the tree, so the layout lives here and
`server.store` re-exports it.
"""

# ---- item rows: float32[ITEM_WIDTH]; ITEM_CF .. ITEM_CF+CF_DIM is the CF embedding
ITEM_ACTIVE = 0        # 1.0 active, 0.0 inactive/deleted
ITEM_MATURITY = 1      # MATURITY_CODES value; anything else is treated as MATURITY_MOST_RESTRICTIVE
ITEM_CATEGORY = 2      # dense category id 0..MAX_CATEGORIES-1 (primary category)
ITEM_POPULARITY = 3    # 0..1, log-scaled interaction count
ITEM_CREATED_DAYS = 4  # days since the Unix epoch when the item appeared
ITEM_EDITORIAL = 5     # editorial boost 0..1
ITEM_QUALITY = 6       # 0..1, mean normalised rating
ITEM_SKIP_RATE = 7     # 0..1
ITEM_SPONSORED = 8     # 1.0 when the item may fill a sponsored slot
ITEM_CAMPAIGN = 9      # dense sponsored-campaign id (state "campaigns"), 0 = none
ITEM_CF = 16
CF_DIM = 32
ITEM_WIDTH = ITEM_CF + CF_DIM

# ---- user rows: float32[USER_WIDTH], then int32 seen_head, int32 seen_count, int32[SEEN_CAP]
USER_ACTIVITY = 0      # log1p(number of interactions)
USER_SKIP_RATE = 1
USER_LAST_ACTIVE_DAYS = 2
USER_CONSENT = 3       # 1.0 personalisation allowed, 0.0 opted out
USER_HAS_CF = 4        # 1.0 when USER_CF holds a trained embedding
USER_EVENT_COUNT = 5   # exact interaction count kept by the ingest worker (0 on offline-built rows)
USER_SKIP_COUNT = 6    # exact skip count (weight < 0.5) kept by the ingest worker
USER_AFFINITY = 8      # MAX_CATEGORIES floats, decayed interaction weight per category
MAX_CATEGORIES = 64
USER_CF = USER_AFFINITY + MAX_CATEGORIES
USER_WIDTH = USER_CF + CF_DIM
SEEN_CAP = 256
IMPRESSION_CAP = 512   # impressions remembered per user for frequency caps (db impressions)

# ---- item stats (db item_stats, one value per item): float64[STAT_WIDTH], kept by the
# ingest worker and seeded from the history by `funnel load` (ops.features.item_counts)
STAT_T_REF = 0         # seconds since the epoch that the decayed columns refer to
STAT_COUNT = 1         # exact number of interactions (impressions excluded)
STAT_WEIGHT_SUM = 2    # sum of interaction weights
STAT_SKIPS = 3         # exact number of interactions with weight < 0.5
STAT_TREND = 4         # sum of weight * 2**(-age / trending half-life) at STAT_T_REF
STAT_EVENTS = 5        # STAT_EVENTS + EventType value: decayed count of that event type
N_EVENT_TYPES = 9      # EventType values 0..8 (0 = unspecified, never counted)
STAT_WIDTH = STAT_EVENTS + N_EVENT_TYPES

# ---- item rows are stored CHUNK_ROWS to an LMDB value
CHUNK_ROWS_LOG2 = 13
CHUNK_ROWS = 1 << CHUNK_ROWS_LOG2

# ---- maturity: G < PG < PG13 < R < NC17; unknown/malformed == most restrictive (fail closed)
MATURITY_CODES = {"G": 0, "PG": 1, "PG13": 2, "R": 3, "NC17": 4}
MATURITY_NAMES = {v: k for k, v in MATURITY_CODES.items()}
MATURITY_MOST_RESTRICTIVE = 4


def canonical_maturity(raw) -> str | None:
    """"PG-13", "pg 13", "NC_17" -> "PG13"/"NC17"; None when missing or unrecognised
    (callers then store MATURITY_MOST_RESTRICTIVE: fail closed)."""
    if not isinstance(raw, str):
        return None
    code = raw.strip().upper().replace("-", "").replace(" ", "").replace("_", "")
    return code if code in MATURITY_CODES else None

# ---- ranker features: column order of the assembled matrix [candidates x N_FEATURES]
FEATURES = (
    "cf_score",             # dot(user CF embedding, item CF embedding); 0 without a user embedding
    "category_affinity",    # user's normalised affinity for the item's category
    "item_popularity",
    "item_recency",         # exp(-ln2 * age_days / recency_half_life_days)
    "editorial_boost",
    "item_quality",
    "item_skip_rate",
    "user_skip_rate",
    "user_activity",
    "content_similarity",   # from the content source (session/recent items); 0 otherwise
    "trending_score",       # from the trending source; 0 otherwise
    "from_cf",              # 1 when the CF source retrieved the candidate
)
N_FEATURES = len(FEATURES)
# per-candidate source signals passed to the assembler, float32[n, N_SOURCE_SIGNALS]
SIGNAL_CONTENT, SIGNAL_TRENDING, SIGNAL_CF = 0, 1, 2
N_SOURCE_SIGNALS = 3

# ---- filter reasons (uint8 codes written by the hard-filter kernel)
KEEP = 0
REMOVED_UNKNOWN = 1        # index outside the catalog
REMOVED_INACTIVE = 2
REMOVED_MATURITY = 3
REMOVED_BLOCKED_CATEGORY = 4
REMOVED_BLOCKED_ITEM = 5   # codes >= 5 come from the caller's deny list
REMOVED_SEEN = 6
REMOVED_EXCLUDED = 7
REMOVED_CAPPED = 8
N_REASONS = 9
REASON_NAMES = ("kept", "unknown", "inactive", "maturity", "blocked_category",
                "blocked_item", "seen", "excluded", "frequency_cap")
