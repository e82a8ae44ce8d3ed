"""Storage: the LMDB feature store and the data-directory layout."""

from server.store.lmdb_store import (  # noqa: F401
    LmdbStore,
    LmdbStoreConfig,
    StoreSnapshot,
    empty_impressions,
    empty_user_value,
    impressions_since,
    push_impression,
    push_seen,
    user_recent_items,
    user_row_view,
    user_seen_view,
)
from server.store.paths import DataDir  # noqa: F401
