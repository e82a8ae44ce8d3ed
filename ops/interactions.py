"""Imported interaction history: the training input, one columnar file per tenant.

Row i says user ``user_ids[user[i]]`` interacted with item index ``item[i]`` at
``ts[i]`` (seconds since the epoch) with strength ``weight[i]`` in 0..1 (an explicit
rating scaled to 0..1, or the event type's weight). Rows are sorted by ts.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Interactions:
    user_ids: np.ndarray  # str[n_users]; the user's dense index is its position
    user: np.ndarray      # int32[n]
    item: np.ndarray      # int32[n], item dense index in the store's catalog
    ts: np.ndarray        # int64[n], seconds
    weight: np.ndarray    # float32[n], 0..1

    def __len__(self) -> int:
        return int(self.user.shape[0])

    @property
    def n_users(self) -> int:
        return int(self.user_ids.shape[0])

    def subset(self, mask: np.ndarray) -> "Interactions":
        """Rows where mask holds; user_ids (and so user indices) unchanged."""
        return Interactions(self.user_ids, self.user[mask], self.item[mask], self.ts[mask], self.weight[mask])

    def without(self, drop: np.ndarray) -> "Interactions":
        """Rows where ``drop`` does not hold, and only the users that still have rows
        (user indices renumbered in their previous order)."""
        kept = self.subset(~drop)
        present = np.unique(kept.user)
        remap = np.full(self.n_users, -1, dtype=np.int32)
        remap[present] = np.arange(present.size, dtype=np.int32)
        return Interactions(self.user_ids[present], remap[kept.user], kept.item, kept.ts, kept.weight)

    def sorted(self) -> "Interactions":
        order = np.argsort(self.ts, kind="stable")
        return Interactions(self.user_ids, self.user[order], self.item[order], self.ts[order], self.weight[order])

    def save(self, path: str) -> None:
        np.savez(path, user_ids=self.user_ids.astype(str), user=self.user.astype(np.int32),
                 item=self.item.astype(np.int32), ts=self.ts.astype(np.int64),
                 weight=self.weight.astype(np.float32))

    @classmethod
    def load(cls, path: str) -> "Interactions":
        with np.load(path, allow_pickle=False) as z:
            return cls(z["user_ids"], z["user"], z["item"], z["ts"], z["weight"])

    def temporal_split(self, holdout_fraction: float = 0.2, min_history: int = 2) -> tuple["Interactions", "Interactions"]:
        """Per-user temporal holdout: each user with at least ``min_history`` rows keeps
        the earliest (1 - holdout_fraction) of them (at least one) in train and the
        rest in test. Users below ``min_history`` stay entirely in train."""
        data = self.sorted()
        n = len(data)
        order = np.lexsort((np.arange(n), data.user))  # by user, then time
        users = data.user[order]
        starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]])
        ends = np.r_[starts[1:], n]
        is_test = np.zeros(n, dtype=bool)
        for s, e in zip(starts, ends):
            size = e - s
            if size < min_history:
                continue
            n_test = max(1, int(round(size * holdout_fraction)))
            n_test = min(n_test, size - 1)
            is_test[order[e - n_test:e]] = True
        return data.subset(~is_test), data.subset(is_test)
