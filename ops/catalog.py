"""The catalog model and the dataset readers behind ``funnel load``.

Every reader returns a :class:`Dataset`: a :class:`Catalog`, the interaction
history (``ops.interactions.Interactions`` whose ``item`` is the position in the
catalog) and the rows it skipped. Readers never raise on bad rows: each
malformed row (wrong field count, bad number, bad UTF-8, unknown item, unknown
event type, duplicate item id) becomes a :class:`ParseError` with file name and
1-based line number, and the row is skipped. Only a missing or unrecognisable
dataset directory raises.

A row error is reported on the line where its record starts. Timestamps
beyond +-10**12 s are rejected as malformed.

Formats (full reference with examples in ops/FORMATS.md):

canonical (a directory with ``items.jsonl`` or ``items.csv``, optional ``events.csv``)
    items.jsonl, one JSON object per line::

        {"item_id": "m1", "title": "...", "categories": ["Drama", "Crime"],
         "maturity_rating": "PG13", "created_at": "2024-01-02T00:00:00Z",
         "active": true, "sponsored": false, "editorial_boost": 0.0, "campaign": "summer-24"}

    ``item_id`` is required; the rest default to title "", no categories,
    maturity unknown (served as the most restrictive rating, fail closed),
    created_at unknown, active true, sponsored false, editorial_boost 0, no campaign.
    ``created_at`` is ISO 8601 (naive = UTC) or epoch seconds;
    ``editorial_boost`` must lie in 0..1. items.csv has the same columns (header
    row required, extra columns ignored, categories ``|``-separated, booleans
    true/false/1/0/yes/no). An item id given twice keeps its first row.

    events.csv: ``user_id,item_id,type,timestamp_ms[,value]``, plain
    comma-separated without quoting (ids must not contain commas; an optional
    header row starting with ``user_id`` is skipped). Type -> history weight:
    see :data:`EVENT_WEIGHTS`; ``dwell`` weighs min(value / 60 s, 1) (value =
    seconds, required), ``rating`` weighs value / 10 (value 0..10, required);
    ``impression`` rows are validated and counted but excluded from history.

movielens (``movies.csv`` movieId,title,genres; ``ratings.csv`` userId,movieId,rating,timestamp)
    weight = rating / 5 (ratings 0..5), timestamps in seconds. movies.csv uses
    standard CSV quoting; ratings.csv is plain comma-separated.

movietweetings (``movies.dat`` ``id::Title (Year)::Genre|Genre``; ``ratings.dat``
``user::item::rating::unix_ts``, UTF-8, ``::`` separators)
    weight = rating / 10 (ratings 0..10).

Neither MovieLens nor MovieTweetings ship an MPAA rating, so maturity is
derived deterministically from the genres (:func:`maturity_from_genres`):
"Adult" -> NC17, "Horror" -> R, any of Thriller/Crime/War -> PG13, Animation,
Family or Children -> G, otherwise PG (first matching rule wins). Their
``created_ts`` is Jan 1 (UTC) of the year in the title, e.g. "(1994)".

In every format an item without a creation time gets the dataset's earliest
interaction timestamp (0 when there are no interactions).

Categories: an item's primary category is its first listed one ("uncategorized"
when it lists none). Primary category names get dense ids in order of first
appearance, capped at ``MAX_CATEGORIES``: the first 63 distinct names get ids
0..62 and every further name maps to one shared "other" category (id 63).
"""

from __future__ import annotations

import array
import csv
import dataclasses
import functools
import json
import math
import os
import re
from dataclasses import InitVar, dataclass, field
from datetime import datetime, timezone
from typing import Iterator, Sequence

import numpy as np
from tqdm import tqdm

from kernels.layout import MAX_CATEGORIES, canonical_maturity
from ops.interactions import Interactions

OTHER_CATEGORY = "other"
UNCATEGORIZED = "uncategorized"

# history weight (0..1) per canonical event type with a fixed weight
EVENT_WEIGHTS = {"view": 0.5, "click": 0.6, "like": 0.9, "share": 0.9, "purchase": 1.0, "skip": 0.1}
DWELL_FULL_SECONDS = 60.0

ITEM_COLUMNS = ("item_id", "title", "categories", "maturity_rating", "created_at",
                "active", "sponsored", "editorial_boost", "campaign")
MAX_CAMPAIGN_LEN = 256

FORMATS = ("canonical", "movielens", "movietweetings")
_YEAR_IN_TITLE = re.compile(r"\((\d{4})(?:[-\u2013]\d{0,4})?\)\s*$")
_MISSING_TS = np.iinfo(np.int64).min
_MAX_ABS_TS = 10**12  # seconds, ~31,700 years: anything larger is a unit mistake, not a date
_PROGRESS_EVERY = 1 << 16


@dataclass(frozen=True)
class ParseError:
    """One skipped row: ``path:line: message`` (line numbers are 1-based)."""

    path: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.message}"


class ErrorLog:
    """Collects parse errors: keeps the first ``keep`` (in file order), counts all."""

    def __init__(self, keep: int = 10_000):
        self.keep = keep
        self.errors: list[ParseError] = []
        self.total = 0

    def add(self, path: str, line: int, message: str) -> None:
        self.total += 1
        if len(self.errors) < self.keep:
            self.errors.append(ParseError(path, line, message))


# called once per item; catalogs use few distinct strings
normalize_maturity = functools.lru_cache(maxsize=4096)(canonical_maturity)


def maturity_from_genres(genres: Sequence[str]) -> str:
    """Deterministic maturity for datasets without ratings (see module docstring)."""
    g = set(genres)
    if "Adult" in g:
        return "NC17"
    if "Horror" in g:
        return "R"
    if g & {"Thriller", "Crime", "War"}:
        return "PG13"
    if g & {"Animation", "Family", "Children"}:
        return "G"
    return "PG"


def year_from_title(title: str) -> int | None:
    """Epoch seconds of Jan 1 (UTC) of the year in a trailing "(1994)", else None."""
    m = _YEAR_IN_TITLE.search(title)
    if m is None or int(m.group(1)) < 1:
        return None
    return int(datetime(int(m.group(1)), 1, 1, tzinfo=timezone.utc).timestamp())


def assign_categories(categories: Sequence[Sequence[str]], prior: Sequence[str] = ()) -> tuple[list[str], np.ndarray]:
    """Dense primary-category ids: ``(category_names, primary_category int32[n])``.

    Names in ``prior`` keep their ids (so a reload keeps category ids stable);
    new names are appended in order of first appearance until 63 names exist,
    after which they all map to "other" (id 63, or the id "other" already has).
    """
    names = list(prior)
    ids = {name: i for i, name in enumerate(names)}
    primary = np.empty(len(categories), dtype=np.int32)
    for i, cats in enumerate(categories):
        name = cats[0] if cats else UNCATEGORIZED
        cid = ids.get(name)
        if cid is None:
            if len(names) < MAX_CATEGORIES - 1:
                cid = ids[name] = len(names)
                names.append(name)
            else:
                cid = ids.get(OTHER_CATEGORY)
                if cid is None:
                    cid = ids[OTHER_CATEGORY] = len(names)
                    names.append(OTHER_CATEGORY)
        primary[i] = cid
    return names, primary


@dataclass
class Catalog:
    """Items in catalog order (position = the item's position in this file);
    ``item_ids`` are unique.

    ``maturity`` holds the rating string as given (None when absent); features
    map it through :func:`normalize_maturity`. ``category_names`` and
    ``primary_category`` are derived (see :func:`assign_categories`); pass
    ``category_order`` (e.g. with ``dataclasses.replace``) to keep earlier ids.
    """

    item_ids: list[str]
    titles: list[str]
    categories: list[list[str]]
    maturity: list[str | None]
    created_ts: np.ndarray      # int64[n], seconds
    active: np.ndarray          # bool[n]
    sponsored: np.ndarray       # bool[n]
    editorial: np.ndarray       # float32[n], 0..1
    campaigns: list[str] | None = None  # sponsored campaign per item, "" = none (None: no item has one)
    category_order: InitVar[Sequence[str]] = ()
    category_names: list[str] = field(init=False)
    primary_category: np.ndarray = field(init=False)  # int32[n]

    def __post_init__(self, category_order: Sequence[str]) -> None:
        n = len(self.item_ids)
        self.created_ts = np.asarray(self.created_ts, dtype=np.int64)
        self.active = np.asarray(self.active, dtype=bool)
        self.sponsored = np.asarray(self.sponsored, dtype=bool)
        self.editorial = np.asarray(self.editorial, dtype=np.float32)
        if self.campaigns is None:
            self.campaigns = [""] * n
        for name in ("titles", "categories", "maturity", "created_ts", "active", "sponsored", "editorial",
                     "campaigns"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"Catalog.{name} has {len(getattr(self, name))} entries, expected {n}")
        if len(set(self.item_ids)) != n:
            raise ValueError("Catalog.item_ids must be unique")
        self.category_names, self.primary_category = assign_categories(self.categories, category_order)

    def __len__(self) -> int:
        return len(self.item_ids)

    def with_category_order(self, prior: Sequence[str]) -> "Catalog":
        """A copy whose category ids extend ``prior`` (names keep their ids)."""
        return dataclasses.replace(self, category_order=list(prior))


@dataclass
class Dataset:
    """A parsed dataset: ``history.item`` indexes ``catalog`` positions, sorted by ts.

    ``errors`` holds the first skipped rows (file order), ``n_errors`` counts all
    of them; ``impressions`` counts valid impression rows excluded from history.
    """

    catalog: Catalog
    history: Interactions
    errors: list[ParseError]
    n_errors: int
    fmt: str
    impressions: int = 0


# --------------------------------------------------------------------- helpers
class _Lines:
    """Decoded lines of a file, line endings kept (csv needs them inside quoted
    fields); ``lineno`` is the physical line last read and ``record_start`` the
    first line of the current multi-line CSV record (0 otherwise). Undecodable
    lines are logged and skipped. Drives a byte-based tqdm bar."""

    def __init__(self, path: str, errors: ErrorLog, progress: bool):
        self.path = path
        self.name = os.path.basename(path)
        self.errors = errors
        self.progress = progress
        self.lineno = 0
        self.record_start = 0

    def __iter__(self) -> Iterator[str]:
        with open(self.path, "rb") as f, tqdm(total=os.path.getsize(self.path), unit="B", unit_scale=True,
                                              desc=f"read {self.name}", disable=not self.progress) as bar:
            done = 0
            for raw in f:
                self.lineno += 1
                done += len(raw)
                if self.lineno % _PROGRESS_EVERY == 0:
                    bar.update(done)
                    done = 0
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError as e:
                    self.errors.add(self.path, self.lineno, f"invalid UTF-8: {e.reason} at byte {e.start}")
                    continue
                yield text
            bar.update(done)

    @property
    def line(self) -> int:
        """The line a row error is reported on: where the current record starts."""
        return self.record_start or self.lineno

    def error(self, message: str) -> None:
        if self.record_start:
            message = f"{message} (record spans lines {self.record_start}-{self.lineno})"
        self.errors.add(self.path, self.line, message)


def _split_rows(src: _Lines, sep: str, header: str | None = None) -> Iterator[list[str]]:
    """Non-blank lines split on ``sep`` (no quoting, so a stray quote spoils one
    line only); a first row whose first field is ``header`` is skipped."""
    for text in src:
        row = text.rstrip("\r\n").split(sep)
        if row == [""] or (header and src.lineno == 1 and _is_header(row, header)):
            continue
        yield row


def _csv_rows(src: _Lines, header: str | None = None) -> Iterator[list[str]]:
    """Non-blank CSV records (standard quoting; a quoted field may span lines).
    Records the csv module rejects are logged; a first row whose first field is
    ``header`` is skipped."""
    reader = csv.reader(src)
    while True:
        start = src.lineno + 1
        src.record_start = 0
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as e:
            src.error(f"bad CSV: {e}")
            continue
        if not row or (header and start == 1 and _is_header(row, header)):
            continue
        src.record_start = start if src.lineno > start else 0
        yield row


def _checked_ts(ts: int) -> int:
    if not -_MAX_ABS_TS <= ts <= _MAX_ABS_TS:
        raise ValueError(f"timestamp {ts} out of range")
    return ts


def _parse_time(value: object) -> int:
    if isinstance(value, bool):
        raise ValueError(f"bad created_at {value!r}")
    if isinstance(value, (int, float)):
        if not math.isfinite(value):
            raise ValueError(f"bad created_at {value!r}")
        return _checked_ts(int(value))
    if not isinstance(value, str):
        raise ValueError(f"bad created_at {value!r}")
    text = value.strip()
    if text.lstrip("+-").isdigit():
        return _checked_ts(int(text))
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"bad created_at {value!r} (want ISO 8601 or epoch seconds)") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return int(dt.timestamp())


def _parse_bool(value: object, name: str, default: bool) -> bool:
    if value is None or value == "":
        return default
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        low = value.strip().lower()
        if low in ("true", "1", "yes"):
            return True
        if low in ("false", "0", "no"):
            return False
    raise ValueError(f"bad {name} {value!r} (want true/false)")


def _parse_unit(value: object, name: str) -> float:
    if value is None or value == "":
        return 0.0
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(f"bad {name} {value!r}")
    x = float(value)
    if not 0.0 <= x <= 1.0:  # also rejects nan
        raise ValueError(f"{name} {value!r} outside 0..1")
    return x


class _CatalogBuilder:
    """Accumulates item rows; ``created_ts`` missing until :meth:`build` fills it."""

    def __init__(self):
        self.item_ids: list[str] = []
        self.titles: list[str] = []
        self.categories: list[list[str]] = []
        self.maturity: list[str | None] = []
        self.created = array.array("q")
        self.active = array.array("b")
        self.sponsored = array.array("b")
        self.editorial = array.array("f")
        self.campaigns: list[str] = []
        self.index: dict[str, int] = {}
        self.first_line: list[int] = []

    def add(self, src: _Lines, item_id: str, title: str, categories: list[str], maturity: str | None,
            created_ts: int | None, active: bool = True, sponsored: bool = False, editorial: float = 0.0,
            campaign: str = "") -> None:
        if not item_id:
            src.error("empty item id")
            return
        if item_id in self.index:
            src.error(f"duplicate item id {item_id!r} (first on line {self.first_line[self.index[item_id]]}); row skipped")
            return
        self.index[item_id] = len(self.item_ids)
        self.first_line.append(src.line)
        self.item_ids.append(item_id)
        self.titles.append(title)
        self.categories.append(categories)
        self.maturity.append(maturity)
        self.created.append(_MISSING_TS if created_ts is None else created_ts)
        self.active.append(active)
        self.sponsored.append(sponsored)
        self.editorial.append(editorial)
        self.campaigns.append(campaign)

    def build(self, default_created_ts: int) -> Catalog:
        created = np.frombuffer(self.created, dtype=np.int64).copy()
        created[created == _MISSING_TS] = default_created_ts
        return Catalog(self.item_ids, self.titles, self.categories, self.maturity, created,
                       np.frombuffer(self.active, dtype=np.int8).astype(bool),
                       np.frombuffer(self.sponsored, dtype=np.int8).astype(bool),
                       np.frombuffer(self.editorial, dtype=np.float32).copy(), self.campaigns)


class _HistoryBuilder:
    def __init__(self, item_index: dict[str, int]):
        self.item_index = item_index
        self.users: dict[str, int] = {}
        self.user = array.array("i")
        self.item = array.array("i")
        self.ts = array.array("q")
        self.weight = array.array("f")

    def add(self, src: _Lines, user_id: str, item_id: str, ts: int, weight: float) -> None:
        if not user_id:
            src.error("empty user id")
            return
        pos = self.item_index.get(item_id)
        if pos is None:
            src.error(f"unknown item {item_id!r}")
            return
        u = self.users.get(user_id)
        if u is None:
            u = self.users[user_id] = len(self.users)
        self.user.append(u)
        self.item.append(pos)
        self.ts.append(ts)
        self.weight.append(weight)

    def build(self) -> Interactions:
        return Interactions(
            np.array(list(self.users), dtype=str),
            np.frombuffer(self.user, dtype=np.int32).copy(),
            np.frombuffer(self.item, dtype=np.int32).copy(),
            np.frombuffer(self.ts, dtype=np.int64).copy(),
            np.frombuffer(self.weight, dtype=np.float32).copy(),
        ).sorted()


def _finish(items: _CatalogBuilder, events: _HistoryBuilder, errors: ErrorLog, fmt: str,
            impressions: int = 0) -> Dataset:
    history = events.build()
    default_created = int(history.ts[0]) if len(history) else 0
    return Dataset(items.build(default_created), history, errors.errors, errors.total, fmt, impressions)


def _is_header(row: list[str], first: str) -> bool:
    return bool(row) and row[0].strip().lower() == first.lower()


# ------------------------------------------------------------------ canonical
def _add_canonical_item(items: _CatalogBuilder, src: _Lines, rec: dict) -> None:
    try:
        item_id = rec.get("item_id")
        if isinstance(item_id, int) and not isinstance(item_id, bool):
            item_id = str(item_id)
        if not isinstance(item_id, str):
            raise ValueError(f"bad item_id {item_id!r}")
        title = rec.get("title") or ""
        if not isinstance(title, str):
            raise ValueError(f"bad title {title!r}")
        cats = rec.get("categories") or []
        if isinstance(cats, str):
            cats = [c.strip() for c in cats.split("|")]
        if not isinstance(cats, list) or not all(isinstance(c, str) for c in cats):
            raise ValueError(f"bad categories {cats!r} (want a list of strings)")
        maturity = rec.get("maturity_rating")
        if maturity == "":
            maturity = None
        if maturity is not None and not isinstance(maturity, str):
            raise ValueError(f"bad maturity_rating {maturity!r}")
        created = rec.get("created_at")
        created_ts = None if created is None or created == "" else _parse_time(created)
        active = _parse_bool(rec.get("active"), "active", True)
        sponsored = _parse_bool(rec.get("sponsored"), "sponsored", False)
        editorial = _parse_unit(rec.get("editorial_boost"), "editorial_boost")
        campaign = rec.get("campaign") or ""
        if isinstance(campaign, int) and not isinstance(campaign, bool):
            campaign = str(campaign)
        if not isinstance(campaign, str) or len(campaign) > MAX_CAMPAIGN_LEN:
            raise ValueError(f"bad campaign {campaign!r} (want a string of at most {MAX_CAMPAIGN_LEN} characters)")
    except ValueError as e:
        src.error(str(e))
        return
    items.add(src, item_id, title, [c for c in cats if c], maturity, created_ts, active, sponsored, editorial,
              campaign.strip())


def _read_items_jsonl(path: str, items: _CatalogBuilder, errors: ErrorLog, progress: bool) -> None:
    src = _Lines(path, errors, progress)
    for text in src:
        text = text.rstrip("\r\n")
        if not text.strip():
            continue
        try:
            rec = json.loads(text)
        except json.JSONDecodeError as e:
            src.error(f"invalid JSON: {e.msg} at column {e.colno}")
            continue
        if not isinstance(rec, dict):
            src.error("expected a JSON object")
            continue
        _add_canonical_item(items, src, rec)


def _read_items_csv(path: str, items: _CatalogBuilder, errors: ErrorLog, progress: bool) -> None:
    src = _Lines(path, errors, progress)
    header = None
    for row in _csv_rows(src):
        if header is None:
            header = [h.strip() for h in row]
            if "item_id" not in header:
                src.error(f"header must name the columns {', '.join(ITEM_COLUMNS)}; no item_id column")
                return
            continue
        if len(row) != len(header):
            src.error(f"expected {len(header)} fields, got {len(row)}")
            continue
        _add_canonical_item(items, src, dict(zip(header, row)))


def _variable_weight(etype: str, value: str | None) -> float:
    """Weight of a dwell or rating event from its value field; ValueError otherwise."""
    if etype == "rating":
        x = math.nan if value is None else float(value)
        if not 0.0 <= x <= 10.0:
            raise ValueError(f"rating needs a value in 0..10, got {value!r}")
        return x / 10.0
    if etype == "dwell":
        x = math.nan if value is None else float(value)
        if not x >= 0.0:
            raise ValueError(f"dwell needs a value in seconds >= 0, got {value!r}")
        return min(x / DWELL_FULL_SECONDS, 1.0)
    raise ValueError(f"unknown event type {etype!r}")


def _read_events_csv(path: str, events: _HistoryBuilder, errors: ErrorLog, progress: bool) -> int:
    """Returns the number of (valid) impression rows, which are not added."""
    src = _Lines(path, errors, progress)
    impressions = 0
    fixed, add, known = EVENT_WEIGHTS, events.add, events.item_index
    for row in _split_rows(src, ",", header="user_id"):
        n = len(row)
        if n != 4 and n != 5:
            src.error(f"expected 4 or 5 fields (user_id,item_id,type,timestamp_ms[,value]), got {n}")
            continue
        etype = row[2]
        try:
            ts = _checked_ts(int(row[3]) // 1000)
            weight = fixed.get(etype)
            if weight is None and etype != "impression":
                weight = _variable_weight(etype, row[4] if n == 5 else None)
        except ValueError as e:
            src.error(str(e))
            continue
        if weight is not None:
            add(src, row[0], row[1], ts, weight)
        elif row[1] in known:
            impressions += 1
        else:
            src.error(f"unknown item {row[1]!r}")
    return impressions


def read_canonical(path: str, progress: bool = False) -> Dataset:
    """Read a canonical directory (items.jsonl or items.csv, optional events.csv)."""
    errors = ErrorLog()
    items = _CatalogBuilder()
    jsonl, csv_path = os.path.join(path, "items.jsonl"), os.path.join(path, "items.csv")
    if os.path.exists(jsonl):
        _read_items_jsonl(jsonl, items, errors, progress)
    elif os.path.exists(csv_path):
        _read_items_csv(csv_path, items, errors, progress)
    else:
        raise FileNotFoundError(f"{path}: no items.jsonl or items.csv")
    events = _HistoryBuilder(items.index)
    impressions = 0
    events_path = os.path.join(path, "events.csv")
    if os.path.exists(events_path):
        impressions = _read_events_csv(events_path, events, errors, progress)
    return _finish(items, events, errors, "canonical", impressions)


# ------------------------------------------------------- MovieLens / Tweetings
def _add_movie(items: _CatalogBuilder, src: _Lines, movie_id: str, title: str, genres: str) -> None:
    cats = [g for g in genres.split("|") if g and g != "(no genres listed)"]
    items.add(src, movie_id.strip(), title, cats, maturity_from_genres(cats), year_from_title(title))


def _add_rating(events: _HistoryBuilder, src: _Lines, user: str, item: str, rating: str, ts: str, scale: float) -> None:
    try:
        value = float(rating)
        ts_s = _checked_ts(int(ts))
    except ValueError as e:
        src.error(str(e))
        return
    if not 0.0 <= value <= scale:
        src.error(f"rating {rating!r} outside 0..{scale:g}")
        return
    events.add(src, user.strip(), item.strip(), ts_s, value / scale)


def read_movielens(path: str, progress: bool = False) -> Dataset:
    """Read a MovieLens directory (movies.csv, ratings.csv); weight = rating / 5."""
    errors = ErrorLog()
    items = _CatalogBuilder()
    src = _Lines(os.path.join(path, "movies.csv"), errors, progress)
    for row in _csv_rows(src, header="movieId"):
        if len(row) != 3:
            src.error(f"expected 3 fields (movieId,title,genres), got {len(row)}")
            continue
        _add_movie(items, src, *row)
    events = _HistoryBuilder(items.index)
    src = _Lines(os.path.join(path, "ratings.csv"), errors, progress)
    for row in _split_rows(src, ",", header="userId"):
        if len(row) != 4:
            src.error(f"expected 4 fields (userId,movieId,rating,timestamp), got {len(row)}")
            continue
        _add_rating(events, src, *row, scale=5.0)
    return _finish(items, events, errors, "movielens")


def read_movietweetings(path: str, progress: bool = False) -> Dataset:
    """Read a MovieTweetings directory (movies.dat, ratings.dat); weight = rating / 10."""
    errors = ErrorLog()
    items = _CatalogBuilder()
    src = _Lines(os.path.join(path, "movies.dat"), errors, progress)
    for parts in _split_rows(src, "::"):
        if len(parts) != 3:
            src.error(f"expected 3 '::'-separated fields (id::title::genres), got {len(parts)}")
            continue
        _add_movie(items, src, *parts)
    events = _HistoryBuilder(items.index)
    src = _Lines(os.path.join(path, "ratings.dat"), errors, progress)
    for parts in _split_rows(src, "::"):
        if len(parts) != 4:
            src.error(f"expected 4 '::'-separated fields (user::item::rating::ts), got {len(parts)}")
            continue
        _add_rating(events, src, *parts, scale=10.0)
    return _finish(items, events, errors, "movietweetings")


_READERS = {"canonical": read_canonical, "movielens": read_movielens, "movietweetings": read_movietweetings}


def detect_format(path: str) -> str:
    """The format of a dataset directory: movies.dat + ratings.dat -> "movietweetings";
    movies.csv + ratings.csv -> "movielens"; items.jsonl or items.csv -> "canonical".
    Raises ValueError when none matches."""
    if not os.path.isdir(path):
        raise ValueError(f"{path}: not a directory")
    have = set(os.listdir(path))
    if {"movies.dat", "ratings.dat"} <= have:
        return "movietweetings"
    if {"movies.csv", "ratings.csv"} <= have:
        return "movielens"
    if "items.jsonl" in have or "items.csv" in have:
        return "canonical"
    raise ValueError(f"{path}: unrecognised dataset (want movies.dat+ratings.dat, movies.csv+ratings.csv, "
                     "or items.jsonl|items.csv [+ events.csv])")


def read_dataset(path: str, fmt: str = "auto", progress: bool = False) -> Dataset:
    """Read a dataset directory in ``fmt`` (one of :data:`FORMATS`, or "auto")."""
    if fmt == "auto":
        fmt = detect_format(path)
    if fmt not in _READERS:
        raise ValueError(f"unknown format {fmt!r} (want auto or one of {', '.join(FORMATS)})")
    return _READERS[fmt](path, progress)
