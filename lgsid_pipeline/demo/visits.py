"""Users and their check-ins: homes, work places, tastes and activity; outings of nearby
visits with a distance-decaying, popularity- and taste-weighted choice, complementary
categories, revisits and daily / weekly rhythms.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import shapely
from scipy.spatial import cKDTree

from lgsid_pipeline.demo.geometry import _points_in
from lgsid_pipeline.demo.spec import _START_US, _START_WEEKDAY, SyntheticCitySpec, _sample_rows
from lgsid_pipeline.demo.vocabulary import (
    _CAT_INDEX,
    _PERIOD_OF_HOUR,
    BUSINESS,
    CATEGORIES,
    NEXT_CATEGORY,
)

if TYPE_CHECKING:
    from lgsid_pipeline.demo.writer import _Items

# Visiting behaviour.
VISITS_PER_ITEM = 24.0  # check-ins per item on average
_SESSION_LENGTH_P = np.array([0.38, 0.28, 0.18, 0.10, 0.06])  # 1-5 visits per outing
_FAVOURITE_START = 0.6  # share of outings that start at one of the user's own places
_FAVOURITE_STEP = 0.35  # chance a later visit is a nearby own place
_STEP_SCALE_KM = 0.6  # distance scale of the next visit in an outing
_NEIGHBOURS = 32  # candidates for the next visit (nearest items to the current one)
_WEEKDAY_HOURS = np.array(
    [
        0.3,
        0.15,
        0.1,
        0.05,
        0.05,
        0.1,
        0.4,
        1.2,
        1.6,
        1.0,
        0.9,
        1.4,
        2.4,
        2.0,
        1.0,
        0.9,
        1.0,
        1.6,
        2.2,
        2.4,
        2.0,
        1.5,
        1.0,
        0.6,
    ]
)
_WEEKEND_HOURS = np.array(
    [
        0.8,
        0.6,
        0.3,
        0.1,
        0.05,
        0.05,
        0.1,
        0.2,
        0.5,
        1.0,
        1.5,
        1.8,
        2.2,
        2.2,
        2.0,
        1.8,
        1.7,
        1.8,
        2.0,
        2.2,
        2.2,
        2.0,
        1.7,
        1.2,
    ]
)
_CHUNK_CELLS = 2_000_000  # users x items weights held at once


@dataclass
class _Visits:
    homes: np.ndarray
    user: np.ndarray
    item: np.ndarray
    ts_us: np.ndarray


def _draw_near(
    rng: np.random.Generator,
    draw_user: np.ndarray,
    draw_work: np.ndarray,
    origins: tuple[np.ndarray, np.ndarray],
    xy: np.ndarray,
    base: np.ndarray,
    affinity: np.ndarray,
    category: np.ndarray,
    scale: np.ndarray,
) -> np.ndarray:
    """Items drawn with p ~ popularity x category affinity x exp(-distance / scale).

    The distance is from the user's home (``draw_work`` false) or work place; all items are
    candidates. Users are processed in chunks of one (users x items) weight matrix.
    """
    n = len(xy)
    out = np.zeros(len(draw_user), dtype=np.int64)
    u01 = rng.random(len(draw_user))
    order = np.argsort(draw_user, kind="stable")
    sorted_users = draw_user[order]
    n_users = len(scale)
    chunk = max(8, _CHUNK_CELLS // n)
    for a in range(0, n_users, chunk):
        b = min(a + chunk, n_users)
        lo, hi = np.searchsorted(sorted_users, [a, b])
        if lo == hi:
            continue
        idx = order[lo:hi]
        weight = base[None, :] * affinity[a:b][:, category]
        for at_work, origin in zip((False, True), origins, strict=True):
            sel = idx[draw_work[idx] == at_work]
            if not len(sel):
                continue
            o = origin[a:b]
            d = np.hypot(o[:, :1] - xy[None, :, 0], o[:, 1:] - xy[None, :, 1])
            cdf = np.cumsum(weight * np.exp(-d / scale[a:b, None]), axis=1)
            cdf /= cdf[:, -1:]
            cdf += np.arange(b - a)[:, None]
            rows = draw_user[sel] - a
            flat = np.searchsorted(cdf.ravel(), rows + u01[sel], side="right")
            out[sel] = np.clip(flat - rows * n, 0, n - 1)
    return out


def _visits(
    rng: np.random.Generator, spec: SyntheticCitySpec, items: _Items, outline: shapely.Polygon
) -> _Visits:
    xy, cat, use = items.xy, items.category, items.use
    n, n_users, n_cat = len(xy), spec.users, len(CATEGORIES)
    r = spec.radius_km
    # Popularity: heavy-tailed, stations and museums draw crowds.
    popularity = (
        np.array([c.popularity for c in CATEGORIES])[cat]
        * rng.lognormal(0, 1.0, n)
        * np.where(items.chain >= 0, 1.3, 1.0)
    )
    # Homes where places are (residential areas first), some in the outskirts.
    home_w = np.array([0.6, 0.8, 4.0, 0.5, 0.3])[use]
    n_out = n_users // 5
    anchor = rng.choice(n, size=n_users - n_out, p=home_w / home_w.sum())
    near = xy[anchor] + rng.normal(0, 0.35, (n_users - n_out, 2))
    outside = ~shapely.contains_xy(outline, near[:, 0], near[:, 1])
    near[outside] = xy[anchor[outside]]
    outskirts = outline.difference(shapely.Point(0, 0).buffer(0.55 * r))
    homes = np.concatenate([near, _points_in(rng, outskirts, n_out)])
    homes = homes[rng.permutation(n_users)]
    office = np.isin(cat, [_CAT_INDEX["Office"], _CAT_INDEX["Coworking Space"]])
    work_w = np.where(office, 8.0, 1.0) * np.where(use == BUSINESS, 3.0, 1.0)
    works = xy[rng.choice(n, size=n_users, p=work_w / work_w.sum())]
    has_work = rng.random(n_users) < 0.7
    # Tastes: three favourite categories, some noise; personal distance scale of a few km.
    freq = np.array([c.frequency for c in CATEGORIES])
    keys = np.log(freq)[None, :] + rng.gumbel(size=(n_users, n_cat))
    favourite_cats = np.argsort(-keys, axis=1)[:, :3]
    affinity = rng.lognormal(0, 0.35, (n_users, n_cat))
    np.put_along_axis(
        affinity, favourite_cats, np.take_along_axis(affinity, favourite_cats, axis=1) * 3.0, axis=1
    )
    scale = np.clip(rng.lognormal(np.log(1.8), 0.35, n_users), 0.6, 5.0)
    # Activity: heavy-tailed outings per user.
    activity = rng.pareto(1.3, n_users) + 1
    mean_len = float((_SESSION_LENGTH_P * np.arange(1, 6)).sum())
    total_sessions = VISITS_PER_ITEM * n / mean_len
    sessions = np.clip(np.round(activity / activity.sum() * total_sessions), 1, 4 * spec.days)
    sessions = sessions.astype(np.int64)
    # Own places (revisited): drawn once from the same distance-decaying choice.
    n_fav = np.clip(2 + np.round(1.5 * np.log1p(sessions)), 2, 10).astype(np.int64)
    fav_user = np.repeat(np.arange(n_users), n_fav)
    fav_work = has_work[fav_user] & (rng.random(len(fav_user)) < 0.4)
    origins = (homes, works)
    fav_items = _draw_near(rng, fav_user, fav_work, origins, xy, popularity, affinity, cat, scale)
    favourites = np.zeros((n_users, int(n_fav.max())), dtype=np.int64)
    favourites[fav_user, np.arange(len(fav_user)) - np.repeat(np.cumsum(n_fav) - n_fav, n_fav)] = (
        fav_items
    )
    # Outings: day, start time, origin, length.
    s_user = np.repeat(np.arange(n_users), sessions)
    n_s = len(s_user)
    weekday_of = (np.arange(spec.days) + _START_WEEKDAY) % 7
    day_w = np.where(weekday_of >= 5, 1.3, 1.0)
    day = rng.choice(spec.days, size=n_s, p=day_w / day_w.sum())
    weekend = weekday_of[day] >= 5
    u_hour = rng.random(n_s)
    hour = np.where(
        weekend,
        np.searchsorted(np.cumsum(_WEEKEND_HOURS) / _WEEKEND_HOURS.sum(), u_hour, side="right"),
        np.searchsorted(np.cumsum(_WEEKDAY_HOURS) / _WEEKDAY_HOURS.sum(), u_hour, side="right"),
    ).clip(0, 23)
    t = day * 86400 + hour * 3600 + rng.integers(0, 3600, n_s)
    at_work = has_work[s_user] & ~weekend & (hour >= 8) & (hour < 18) & (rng.random(n_s) < 0.75)
    length = rng.choice(5, size=n_s, p=_SESSION_LENGTH_P) + 1
    # First visit: one of the user's own places, or a new place near home / work that suits
    # the time of day (two candidates, the first kept with its time-of-day fit).
    hours_fit = np.array([c.hours for c in CATEGORIES]).T  # (period, category)
    hours_fit = hours_fit / hours_fit.max(axis=1, keepdims=True)
    own = rng.random(n_s) < _FAVOURITE_START
    pick = (rng.random(n_s) ** 2 * n_fav[s_user]).astype(np.int64)  # the first ones most
    current = favourites[s_user, pick]
    explore = np.flatnonzero(~own)
    cand = _draw_near(
        rng,
        np.repeat(s_user[explore], 2),
        np.repeat(at_work[explore], 2),
        origins,
        xy,
        popularity,
        affinity,
        cat,
        scale,
    ).reshape(-1, 2)
    period = _PERIOD_OF_HOUR[hour[explore]]
    keep_first = rng.random(len(explore)) < hours_fit[period, cat[cand[:, 0]]]
    current[explore] = np.where(keep_first, cand[:, 0], cand[:, 1])
    rec_s, rec_item, rec_t = [np.arange(n_s)], [current.copy()], [t.copy()]
    # Later visits: near the previous one, complementary categories, own places nearby.
    nb_dist, nb = cKDTree(xy).query(xy, k=min(_NEIGHBOURS + 1, n))
    nb_dist, nb = nb_dist[:, 1:], nb[:, 1:]
    boost = np.ones((n_cat, n_cat))
    np.fill_diagonal(boost, 0.5)
    for src, targets in NEXT_CATEGORY.items():
        for dst in targets:
            boost[_CAT_INDEX[src], _CAT_INDEX[dst]] = 5.0
    for step in range(1, 5):
        act = np.flatnonzero(length > step)
        if not len(act):
            break
        gap = 900 + rng.gamma(2.0, 1300.0, len(act))
        t[act] += gap.astype(np.int64)
        cur, usr = current[act], s_user[act]
        cand = nb[cur]
        ccat = cat[cand]
        period = _PERIOD_OF_HOUR[(t[act] // 3600) % 24]
        w = (
            popularity[cand]
            * affinity[usr[:, None], ccat]
            * boost[cat[cur][:, None], ccat]
            * hours_fit[period[:, None], ccat]
            * np.exp(-nb_dist[cur] / _STEP_SCALE_KM)
        )
        w[cand == cur[:, None]] = 0.0
        nxt = cand[np.arange(len(act)), _sample_rows(rng, w)]
        own_place = favourites[usr, (rng.random(len(act)) * n_fav[usr]).astype(np.int64)]
        close = np.linalg.norm(xy[own_place] - xy[cur], axis=1) < 1.5
        jump = close & (own_place != cur) & (rng.random(len(act)) < _FAVOURITE_STEP)
        nxt[jump] = own_place[jump]
        current[act] = nxt
        rec_s.append(act)
        rec_item.append(nxt)
        rec_t.append(t[act].copy())
    user = s_user[np.concatenate(rec_s)]
    item = np.concatenate(rec_item)
    ts = _START_US + np.concatenate(rec_t).astype(np.int64) * 1_000_000
    order = np.lexsort((item, user, ts))
    user, item, ts = user[order], item[order], ts[order]
    dup = np.zeros(len(ts), dtype=bool)
    dup[1:] = (ts[1:] == ts[:-1]) & (user[1:] == user[:-1]) & (item[1:] == item[:-1])
    return _Visits(homes, user[~dup], item[~dup], ts[~dup])
