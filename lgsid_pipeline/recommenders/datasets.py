"""CTR datasets of one city: time-based split, exposure-style negatives, behaviour sequences.

Every check-in is a positive sample (user, item, time) whose behaviour sequence is the user's
earlier check-ins. Each positive gets negatives the user had not visited by then: items near
the positive (its nearest neighbours) and random items. Samples are split by absolute time:
train before ``t1``, validation from ``t1`` to ``t2``, test from ``t2``; sequences only ever
hold check-ins strictly before the sample, so nothing from a later period reaches training.
A source that ships its own split (a ``split`` column) sets ``t1``/``t2``; otherwise the
config or quantiles do.

Item ids are indexed from the training period only: an item first seen later has id 0
(unknown) and is represented by its category and its semantic-ID tokens (assigned
incrementally by the frozen tokenizer), not dropped. Sequences are gathered per batch from
one timeline array, so a split with long sequences costs a few bytes per sample.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from lgsid_pipeline.geo.distance import ball_tree, haversine_km
from lgsid_pipeline.recommenders.config import DatasetConfig
from lgsid_pipeline.warehouse import Warehouse

if TYPE_CHECKING:  # torch is imported where a batch is built, not with this module
    import torch

    from lgsid_pipeline.recommenders.blocks import CtrBatch

SPLITS = ("train", "valid", "test")


def file_split_times(interactions: pd.DataFrame) -> tuple[pd.Timestamp, pd.Timestamp] | None:
    """(t1, t2) of a source that ships its own split: the first UTC time of its ``valid``
    rows and of its ``test`` rows; None when the table has no (non-empty) ``split`` column.

    Raises ``ValueError`` when the files are not a time split (a train row at or after t1,
    a validation row at or after t2), since cut points could not reproduce them.
    """
    if "split" not in interactions.columns or interactions["split"].isna().all():
        return None
    split = interactions["split"].astype("string")
    times = pd.to_datetime(interactions["ts"], utc=True)
    firsts = {name: times[split == name].min() for name in ("valid", "test")}
    empty = [name for name, first in firsts.items() if pd.isna(first)]
    if empty:
        raise ValueError(f"the interactions have a split column but no {' or '.join(empty)} rows")
    t1, t2 = firsts["valid"], firsts["test"]
    late = {
        name: int(((split == name) & (times >= bound)).sum())
        for name, bound in (("train", t1), ("valid", t2))
    }
    if any(late.values()):
        raise ValueError(
            f"the source's split is not a time split: {late['train']} train rows "
            f"at or after {t1}, {late['valid']} validation rows at or after {t2}"
        )
    return t1, t2


def split_times(
    ts: pd.Series,
    config: DatasetConfig,
    from_files: tuple[pd.Timestamp, pd.Timestamp] | None = None,
) -> tuple[pd.Timestamp, pd.Timestamp]:
    """(t1, t2): the source's own split (``from_files``, see ``file_split_times``) if given,
    else from the config, else from quantiles of the check-in times."""
    times = pd.to_datetime(ts, utc=True)
    if times.empty:
        raise ValueError("no interactions to split")
    if from_files is not None:
        t1, t2 = (pd.Timestamp(t) for t in from_files)
    else:
        t1 = pd.Timestamp(config.t1) if config.t1 else times.quantile(config.q1)
        t2 = pd.Timestamp(config.t2) if config.t2 else times.quantile(config.q2)
    t1 = t1.tz_localize("UTC") if t1.tzinfo is None else t1.tz_convert("UTC")
    t2 = t2.tz_localize("UTC") if t2.tzinfo is None else t2.tz_convert("UTC")
    if not t1 < t2:
        raise ValueError(f"split times must satisfy t1 < t2, got {t1} and {t2}")
    if not (times < t1).any() or not (times >= t2).any():
        raise ValueError(
            f"split times {t1} / {t2} leave an empty train or test period "
            f"(check-ins run from {times.min()} to {times.max()})"
        )
    return t1, t2


@dataclass
class CtrSamples:
    """One split's samples over a shared timeline; ``index`` gathers a ``CtrBatch``.

    ``codes`` (n_item_rows + 1, L) are the tokens of every item row (row 0 = padding, -1 =
    no code); pick a tokenizer variant with ``with_codes``.
    """

    user: np.ndarray  # (S,) user index (0 = not seen in training)
    history_end: np.ndarray  # (S,) timeline position after the sample's last behaviour
    history_start: np.ndarray  # (S,) timeline position of the user's first behaviour
    target_row: np.ndarray  # (S,) item row (1-based) of the target
    distance_km: np.ndarray  # (S,) from the user's last check-in to the target
    labels: np.ndarray  # (S,) 1 = visited, 0 = negative
    timeline_rows: np.ndarray  # (T,) item rows of every check-in, by user then time
    row_item_index: np.ndarray  # (R + 1,) item-id index of each row (0 = unseen in training)
    row_category: np.ndarray  # (R + 1,) category index of each row
    codes: np.ndarray  # (R + 1, L)
    short_len: int
    long_len: int

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def label(self) -> torch.Tensor:
        import torch

        return torch.from_numpy(self.labels.astype(np.float32))

    def with_codes(self, codes: np.ndarray) -> CtrSamples:
        """The same samples with another variant's item codes (L = 0: item ids only)."""
        return CtrSamples(**{**self.__dict__, "codes": codes})

    def _window(self, rows: np.ndarray, length: int) -> tuple[np.ndarray, np.ndarray]:
        end = self.history_end[rows][:, None]
        positions = end - length + np.arange(length)[None, :]
        valid = positions >= self.history_start[rows][:, None]
        item_rows = np.where(valid, self.timeline_rows[np.clip(positions, 0, None)], 0)
        return item_rows, valid

    def index(self, idx: torch.Tensor | np.ndarray | slice) -> CtrBatch:
        """The samples at ``idx`` as a batch with their sequences."""
        import torch

        from lgsid_pipeline.recommenders.blocks import batch_from_numpy

        rows = (
            np.arange(len(self))[idx]
            if isinstance(idx, slice)
            else np.asarray(idx.cpu().numpy() if isinstance(idx, torch.Tensor) else idx)
        )
        short_rows, short_mask = self._window(rows, self.short_len)
        long_rows, long_mask = self._window(rows, self.long_len)
        target = self.target_row[rows]
        return batch_from_numpy(
            self.user[rows],
            self.row_item_index[target],
            self.row_category[target],
            self.distance_km[rows],
            self.row_item_index[short_rows],
            self.row_category[short_rows],
            target_codes=self.codes[target],
            hist_codes=self.codes[short_rows],
            hist_mask=short_mask,
            long_items=self.row_item_index[long_rows],
            long_codes=self.codes[long_rows],
            long_category=self.row_category[long_rows],
            long_mask=long_mask,
            label=self.labels[rows].astype(np.float32),
        )


@dataclass
class CityCtrData:
    """The three splits of a city plus what models need to size their tables."""

    splits: dict[str, CtrSamples]
    item_ids: list[str]  # item id of each row (row r is item_ids[r - 1])
    n_users: int
    n_items: int  # item-id vocabulary size (training items)
    n_categories: int
    t1: pd.Timestamp
    t2: pd.Timestamp
    stats: dict[str, int]
    config: DatasetConfig

    def with_codes(self, codes: np.ndarray) -> dict[str, CtrSamples]:
        return {name: s.with_codes(codes) for name, s in self.splits.items()}

    def code_matrix(self, semantic_ids: pd.DataFrame | None, levels: list[str]) -> np.ndarray:
        """(rows + 1, L) tokens aligned to the item rows from a semantic-ID table; items
        without a code get -1 (None: the item-ids-only variant, L = 0)."""
        if semantic_ids is None:
            return np.zeros((len(self.item_ids) + 1, 0), dtype=np.int64)
        out = np.full((len(self.item_ids) + 1, len(levels)), -1, dtype=np.int64)
        row_of = {item: r + 1 for r, item in enumerate(self.item_ids)}
        rows = semantic_ids["item_id"].astype(str).map(row_of)
        known = rows.notna().to_numpy()
        out[rows[known].astype(int).to_numpy()] = semantic_ids.loc[known, levels].to_numpy(
            dtype=np.int64
        )
        return out

    def describe(self) -> dict:
        return {
            "t1": self.t1.isoformat(),
            "t2": self.t2.isoformat(),
            **self.stats,
            "config": asdict(self.config),
        }


def build_city_ctr_data(
    items: pd.DataFrame, interactions: pd.DataFrame, config: DatasetConfig
) -> CityCtrData:
    """Samples of every split for one city (see the module docstring)."""
    missing = {"item_id", "latitude", "longitude", "category"} - set(items.columns)
    missing |= {"user_id", "item_id", "ts"} - set(interactions.columns)
    if missing:
        raise ValueError(f"items/interactions lack columns {sorted(missing)}")
    rng = np.random.default_rng(config.seed)
    item_ids = items["item_id"].astype(str).tolist()
    row_of = pd.Series(np.arange(1, len(item_ids) + 1), index=item_ids)
    events = interactions[["user_id", "item_id", "ts"]].copy()
    events["ts"] = pd.to_datetime(events["ts"], utc=True)
    events["item_id"] = events["item_id"].astype(str)
    unknown = ~events["item_id"].isin(row_of.index)
    if unknown.any():
        raise ValueError(
            f"{int(unknown.sum())} interactions name items missing from the items "
            "table (re-materialize interactions)"
        )
    t1, t2 = split_times(events["ts"], config, file_split_times(interactions))
    events = events.sort_values(["user_id", "ts", "item_id"], kind="stable").reset_index(drop=True)
    events["row"] = row_of.loc[events["item_id"].to_numpy()].to_numpy()
    user_codes, user_index = pd.factorize(events["user_id"].astype(str))
    events["user"] = user_codes
    starts = np.r_[0, np.flatnonzero(np.diff(user_codes)) + 1]
    first_of_user = np.repeat(starts, np.diff(np.r_[starts, len(events)]))
    position = np.arange(len(events))
    period = np.where(events["ts"] < t1, 0, np.where(events["ts"] < t2, 1, 2))

    train_rows = set(events.loc[period == 0, "row"].tolist())
    row_item_index = np.zeros(len(item_ids) + 1, dtype=np.int64)
    for n, row in enumerate(sorted(train_rows), start=1):
        row_item_index[row] = n
    train_users = np.unique(user_codes[period == 0])
    user_vocab = np.zeros(len(user_index), dtype=np.int64)
    user_vocab[train_users] = np.arange(1, len(train_users) + 1)
    categories, _ = pd.factorize(items["category"].astype("string").fillna("\0unknown"))
    row_category = np.r_[0, categories + 1].astype(np.int64)

    lat = np.r_[np.nan, items["latitude"].astype(float).to_numpy()]
    lon = np.r_[np.nan, items["longitude"].astype(float).to_numpy()]
    tree = ball_tree(lat[1:], lon[1:])
    pool = min(config.near_pool + 1, len(item_ids))
    _, near = tree.query(np.radians(np.c_[lat[1:], lon[1:]]), k=pool)
    near_rows = near + 1  # (R, pool) item rows, nearest first (the item itself included)

    has_history = position > first_of_user
    stats = {"interactions": len(events), "positives_without_history": 0}
    splits: dict[str, CtrSamples] = {}
    for split_id, name in enumerate(SPLITS):
        chosen = np.flatnonzero((period == split_id) & has_history)
        stats["positives_without_history"] += int(((period == split_id) & ~has_history).sum())
        cap = config.max_train_positives if name == "train" else config.max_eval_positives
        if cap and len(chosen) > cap:  # keep the most recent positives of the split
            chosen = chosen[np.argsort(events["ts"].to_numpy()[chosen], kind="stable")[-cap:]]
            chosen.sort()
        splits[name] = _samples_for(
            chosen,
            events,
            first_of_user,
            near_rows,
            lat,
            lon,
            user_vocab,
            row_item_index,
            row_category,
            config,
            rng,
        )
        stats[f"{name}_positives"] = int(len(chosen))
        stats[f"{name}_samples"] = len(splits[name])
    stats["items_unseen_in_training"] = int(len(item_ids) - len(train_rows))
    return CityCtrData(
        splits,
        item_ids,
        len(train_users),
        len(train_rows),
        int(row_category.max()),
        t1,
        t2,
        stats,
        config,
    )


def _samples_for(
    chosen: np.ndarray,
    events: pd.DataFrame,
    first_of_user: np.ndarray,
    near_rows: np.ndarray,
    lat: np.ndarray,
    lon: np.ndarray,
    user_vocab: np.ndarray,
    row_item_index: np.ndarray,
    row_category: np.ndarray,
    config: DatasetConfig,
    rng: np.random.Generator,
) -> CtrSamples:
    timeline = events["row"].to_numpy().astype(np.int64)
    users = events["user"].to_numpy()
    n_rows = len(lat) - 1
    per = 1 + config.near_negatives + config.random_negatives
    target = np.zeros((len(chosen), per), dtype=np.int64)
    for k, pos in enumerate(chosen):
        seen = set(timeline[first_of_user[pos] : pos + 1].tolist())
        positive = timeline[pos]
        target[k, 0] = positive
        picks: list[int] = []
        candidates = near_rows[positive - 1, 1:]
        for row in rng.permutation(candidates):
            if len(picks) == config.near_negatives:
                break
            if row not in seen:
                picks.append(int(row))
        while len(picks) < config.near_negatives + config.random_negatives:
            row = int(rng.integers(1, n_rows + 1))
            if row not in seen and row not in picks:
                picks.append(row)
        target[k, 1:] = picks
    labels = np.zeros_like(target, dtype=np.int64)
    labels[:, 0] = 1
    last = timeline[chosen - 1]  # the user's previous check-in: where they are now
    last_rep = np.repeat(last, per)
    flat_target = target.ravel()
    distance = haversine_km(lat[last_rep], lon[last_rep], lat[flat_target], lon[flat_target])
    return CtrSamples(
        user=np.repeat(user_vocab[users[chosen]], per),
        history_end=np.repeat(chosen, per),
        history_start=np.repeat(first_of_user[chosen], per),
        target_row=flat_target,
        distance_km=distance.astype(np.float32),
        labels=labels.ravel(),
        timeline_rows=timeline,
        row_item_index=row_item_index,
        row_category=row_category,
        codes=np.zeros((n_rows + 1, 0), dtype=np.int64),
        short_len=config.short_len,
        long_len=config.long_len,
    )


_SAMPLE_COLUMNS = ("user", "history_start", "history_end", "target_row", "distance_km", "labels")


def save_ctr_data(warehouse: Warehouse, city: str, data: CityCtrData) -> None:
    """Publish a city's samples, timeline and item rows as one version of the
    ``recommender_datasets`` stage (readers see the whole previous build or the new one)."""
    first = data.splits["train"]
    with warehouse.staging(city, "recommender_datasets", carry_forward=False) as staged:
        for name, samples in data.splits.items():
            frame = pd.DataFrame({c: getattr(samples, c) for c in _SAMPLE_COLUMNS})
            staged.write_table("recommender_samples", frame.assign(city=city), part=name)
        staged.write_table(
            "recommender_timeline",
            pd.DataFrame(
                {
                    "city": city,
                    "position": np.arange(len(first.timeline_rows)),
                    "item_row": first.timeline_rows,
                }
            ),
        )
        staged.write_table(
            "recommender_items",
            pd.DataFrame(
                {
                    "city": city,
                    "item_row": np.arange(1, len(data.item_ids) + 1),
                    "item_id": data.item_ids,
                    "item_index": first.row_item_index[1:],
                    "category_index": first.row_category[1:],
                }
            ),
        )
        meta = {
            **data.describe(),
            "n_users": data.n_users,
            "n_items": data.n_items,
            "n_categories": data.n_categories,
        }
        staged.write_table(
            "recommender_meta", pd.DataFrame({"city": [city], "meta": [json.dumps(meta)]})
        )
        warehouse.publish(staged)


def load_ctr_data(warehouse: Warehouse, city: str) -> CityCtrData:
    """Read what ``save_ctr_data`` wrote (clear error when a part is missing)."""
    meta = json.loads(warehouse.read_table("recommender_meta", city)["meta"].iloc[0])
    items = warehouse.read_table("recommender_items", city).sort_values("item_row")
    timeline = warehouse.read_table("recommender_timeline", city).sort_values("position")
    row_item_index = np.r_[0, items["item_index"].to_numpy(dtype=np.int64)]
    row_category = np.r_[0, items["category_index"].to_numpy(dtype=np.int64)]
    timeline_rows = timeline["item_row"].to_numpy(dtype=np.int64)
    config = DatasetConfig(**meta["config"])
    splits = {}
    for name in SPLITS:
        frame = warehouse.read_table("recommender_samples", city, name)
        if len(frame) != meta[f"{name}_samples"]:
            raise ValueError(
                f"recommender_samples/{name} of {city!r} has {len(frame)} rows, "
                f"its description says {meta[f'{name}_samples']}; re-materialize "
                "recommender_datasets"
            )
        splits[name] = CtrSamples(
            **{c: frame[c].to_numpy() for c in _SAMPLE_COLUMNS},
            timeline_rows=timeline_rows,
            row_item_index=row_item_index,
            row_category=row_category,
            codes=np.zeros((len(items) + 1, 0), dtype=np.int64),
            short_len=config.short_len,
            long_len=config.long_len,
        )
    stats = {
        k: v
        for k, v in meta.items()
        if k not in ("t1", "t2", "config", "n_users", "n_items", "n_categories")
    }
    return CityCtrData(
        splits,
        items["item_id"].astype(str).tolist(),
        meta["n_users"],
        meta["n_items"],
        meta["n_categories"],
        pd.Timestamp(meta["t1"]),
        pd.Timestamp(meta["t2"]),
        stats,
        config,
    )


def split_times_of(warehouse: Warehouse, city: str) -> tuple[pd.Timestamp, pd.Timestamp]:
    """(t1, t2) of the city's materialized ``recommender_datasets`` (shared by every model)."""
    meta = json.loads(warehouse.read_table("recommender_meta", city)["meta"].iloc[0])
    return pd.Timestamp(meta["t1"]), pd.Timestamp(meta["t2"])
