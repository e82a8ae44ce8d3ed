"""Each tenant's decay half-lives, as the ingest worker and its roll-up apply them.

The tenant config sets them (``affinity_half_life_days``, ``trending_half_life_days``;
server.tenancy). Parsing the config per event would cost more than applying the event,
so :class:`TenantHalfLives` keeps them per tenant and parses the config again only when
it changed: callers ask once per batch (or roll-up) per tenant, and one comparison of
the stored config bytes with those parsed last tells (every version, a restore included,
stores new bytes).

A change applies to the events applied after it. The decayed sums already stored (a
user's category affinity at the user's reference time, an item's trend and per-type
counts at its T_REF) are not recomputed: they decay with the new half-life from then on.

A tenant without a stored config gets the defaults. A stored config that does not load,
or holds a half-life out of range (written around the Admin API's validation), keeps the
tenant's last good half-lives (the defaults before any), logged once per distinct failure.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass

from ops.features import DAY_SECONDS, HalfLives
from server.store import LmdbStore
from server.tenancy import TenantConfig

log = logging.getLogger("funnel.ingest")


@dataclass(frozen=True)
class _Entry:
    raw: bytes | None              # the stored config these half-lives were read from
    half_lives: HalfLives
    affinity_s: float
    trending_s: float


class TenantHalfLives:
    """Per tenant (affinity, trending) half-lives in seconds, from the stored tenant config
    (module docstring). One instance is shared by the worker's Applier and RollUp."""

    def __init__(self, store: LmdbStore, defaults: HalfLives = HalfLives()):
        self.store = store
        self.defaults = defaults
        self._entries: dict[str, _Entry] = {}
        self._failures: dict[str, str] = {}  # tenant -> the last load failure logged

    def seconds(self, txn, tenant: str) -> tuple[float, float]:
        """(affinity, trending) half-lives of ``tenant`` in seconds, as its config in ``txn``
        sets them. Costs one read and one bytes comparison unless the config changed."""
        raw = txn.get(tenant.encode(), db=self.store.db["tenants"])
        entry = self._entries.get(tenant)
        if entry is None or raw != entry.raw:  # bytes or buffer vs bytes or None: compares contents
            entry = self._entries[tenant] = self._read(tenant, None if raw is None else bytes(raw), entry)
        return entry.affinity_s, entry.trending_s

    def _read(self, tenant: str, raw: bytes | None, previous: _Entry | None) -> _Entry:
        kept = previous.half_lives if previous is not None else self.defaults
        half_lives, version = self.defaults, 0
        if raw is not None:
            try:
                config = TenantConfig.from_json(json.loads(raw))
                half_lives, version = config.half_lives(), config.version
            except Exception as exc:  # unparseable JSON, unknown keys, a value out of range
                half_lives = kept
                why = f"{type(exc).__name__}: {exc}"
                if self._failures.get(tenant) != why:
                    self._failures[tenant] = why
                    log.error("tenant %s: cannot read the half-lives of the stored config (%s); events keep "
                              "decaying with affinity %gd, trending %gd", tenant, why,
                              half_lives.affinity_days, half_lives.trending_days)
            else:
                self._failures.pop(tenant, None)
        if previous is not None and half_lives != kept:
            log.info("tenant %s: config version %d: events from now on decay with affinity half-life %gd, "
                     "trending %gd (were %gd, %gd)", tenant, version, half_lives.affinity_days,
                     half_lives.trending_days, kept.affinity_days, kept.trending_days)
        return _Entry(raw, half_lives, half_lives.affinity_days * DAY_SECONDS, half_lives.trending_days * DAY_SECONDS)
