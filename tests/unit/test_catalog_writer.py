"""Online catalog writes touch only what they change (real LMDB in a temp dir)."""

import numpy as np

from kernels.layout import CHUNK_ROWS, ITEM_ACTIVE, ITEM_CF, ITEM_WIDTH
from protos import funnel_pb2
from server.catalog import CatalogWriter
from server.store import LmdbStore
from server.store.lmdb_store import idx_key


def item(item_id, **kw):
    return funnel_pb2.Item(tenant_id="t", item_id=item_id, title=item_id, categories=["Drama"],
                           maturity_rating="PG", created_at_s=1_700_000_000, active=True, **kw)


def test_upsert_rewrites_only_touched_chunks_and_keeps_learned_columns(tmp_path):
    store = LmdbStore.open(str(tmp_path))
    writer = CatalogWriter(store)
    n = 3 * CHUNK_ROWS
    rows = np.zeros((n, ITEM_WIDTH), dtype=np.float32)
    rows[:, ITEM_CF] = 7.0
    with store.write() as txn:
        store.put_item_rows(txn, "t", rows)
        store.set_state(txn, "t", "n_items", n)
        for i in (5, CHUNK_ROWS + 5):
            store.put_item_meta(txn, "t", i, f"id{i}", {"title": "x"})
    with store.snapshot() as snap:
        before = {c: bytes(snap.txn.get(idx_key("t", c), db=store.db["item_rows"])) for c in range(3)}
    inserted, updated = writer.upsert([writer.validate(item("id5", sponsored=True)), writer.validate(item("new-1")),
                                       writer.validate(item("new-1", sponsored=True))])
    assert (inserted, updated) == (1, 1)
    with store.snapshot() as snap:
        after = {c: bytes(snap.txn.get(idx_key("t", c), db=store.db["item_rows"])) for c in range(4)}
        assert after[1] == before[1] and after[2] == before[2]  # untouched chunks not rewritten
        assert snap.item_index("t", "new-1") == n and snap.state("t", "n_items") == n + 1
        assert snap.item_row("t", 5)[ITEM_CF] == 7.0  # learned columns survive an upsert
        assert sorted(snap.item_list("t", "sponsored").tolist()) == [5, n]
        assert snap.item_list("t", "popular").tolist()[-1] == n
    assert writer.deactivate("t", "id5") is True and writer.deactivate("t", "id5") is False
    assert writer.deactivate("t", "missing") is None
    with store.snapshot() as snap:
        assert snap.item_row("t", 5)[ITEM_ACTIVE] == 0.0 and snap.item_row("t", CHUNK_ROWS + 5)[ITEM_CF] == 7.0
    store.close()
