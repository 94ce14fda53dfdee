"""Loaders for the GroupLens MovieLens 100K and 1M data sets.

sisakit never ships MovieLens: download it from https://grouplens.org/datasets/movielens/
yourself (its licence forbids redistribution) and pass the unzipped folder.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .._validation import short_repr
from ..data import Interactions
from ..errors import DataError, ValidationError
from .files import (
    _as_path,
    _check_min_rating,
    _field_ints,
    _int_table,
    _malformed,
    _text_rows,
    _unique,
)

__all__ = ["MOVIELENS_NAMES", "load_movielens"]

logger = logging.getLogger(__name__)

# The 19 genre flags of ml-100k ``u.item``, in file order (as listed in ``u.genre``).
_ML100K_GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
    "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance",
    "Sci-Fi", "Thriller", "War", "Western",
)


@dataclass(frozen=True)
class _Layout:
    ratings: str
    ratings_sep: str
    ratings_layout: str
    users: str
    users_layout: str
    items: str
    items_layout: str
    sep: str


_LAYOUTS = {
    "ml-100k": _Layout(
        ratings="u.data",
        ratings_sep="\t",
        ratings_layout="user<TAB>item<TAB>rating<TAB>timestamp (four integers)",
        users="u.user",
        users_layout="id|age|gender|occupation|zip",
        items="u.item",
        items_layout="id|title|release date|video release date|url|19 genre flags (24 fields)",
        sep="|",
    ),
    "ml-1m": _Layout(
        ratings="ratings.dat",
        ratings_sep="::",
        ratings_layout="UserID::MovieID::Rating::Timestamp (four integers)",
        users="users.dat",
        users_layout="UserID::Gender::Age::Occupation::Zip-code",
        items="movies.dat",
        items_layout="MovieID::Title::Genres",
        sep="::",
    ),
}

#: Names accepted by :func:`load_movielens`.
MOVIELENS_NAMES = tuple(_LAYOUTS)


def _hint(name: str, lay: _Layout) -> str:
    return (
        f"pass the folder that contains {lay.ratings}, {lay.users} and {lay.items}. MovieLens "
        f"must be downloaded by you from GroupLens (https://grouplens.org/datasets/movielens/, "
        f"file {name}.zip, then unzip it); sisakit never ships it"
    )


def load_movielens(
    name: str, path: str | os.PathLike[str], *, min_rating: float | None = None
) -> Interactions:
    """Load MovieLens 100K (``"ml-100k"``) or 1M (``"ml-1m"``) from an unzipped folder.

    Parameters
    ----------
    name : {"ml-100k", "ml-1m"}
        Which data set.
    path : str or path-like
        The folder holding the files (``u.data``, ``u.user``, ``u.item`` for ml-100k;
        ``ratings.dat``, ``users.dat``, ``movies.dat`` for ml-1m). A folder that holds a
        sub-folder called ``name`` is accepted too.
    min_rating : float, optional
        Keep only ratings ``>= min_rating`` (binarisation for implicit feedback). The id space
        still holds every user and item that has a rating, so the filtered and the full data
        index users and items identically.

    Returns
    -------
    Interactions
        Raw user and item ids are ints. Per-record ``rating`` (1–5) and ``timestamp`` (Unix
        seconds). User attributes ``gender`` (``"M"``/``"F"``), ``age`` (int; ml-1m uses age
        codes 1, 18, 25, 35, 45, 50, 56) and ``occupation`` (ml-100k: str, ml-1m: int code);
        item attributes ``title`` and ``genres`` (``"|"``-joined genre names).

    Raises
    ------
    ValidationError
        If ``name`` is not a supported name, ``path`` is not a str or path-like, or
        ``min_rating`` is not a number.
    DataError
        If the folder or a file is missing, or a line is malformed (the message names the file
        and the 1-based line number).
    """
    if not isinstance(name, str):
        raise ValidationError(f"name must be a string, one of {list(MOVIELENS_NAMES)}, got "
                              f"{short_repr(name)} ({type(name).__name__})")
    if name not in _LAYOUTS:
        raise ValidationError(
            f"unknown MovieLens data set {short_repr(name)}; supported names: {list(MOVIELENS_NAMES)}"
        )
    if min_rating is not None:
        min_rating = _check_min_rating(min_rating)
    lay = _LAYOUTS[name]
    hint = _hint(name, lay)
    folder = _as_path(path, "path", f"the unzipped {name} folder")
    if folder.is_file():
        raise DataError(f"{folder} is a file, not a folder; {hint}")
    if not folder.is_dir():
        raise DataError(f"MovieLens folder {folder} does not exist; {hint}")
    if not (folder / lay.ratings).exists() and (folder / name / lay.ratings).exists():
        folder = folder / name

    table = _int_table(folder / lay.ratings, lay.ratings_sep, 4, lay.ratings_layout, hint)
    users, items = table[:, 0], table[:, 1]
    rating = table[:, 2].astype(np.float32)
    timestamp = table[:, 3]
    keep = np.ones(len(table), bool) if min_rating is None else rating >= min_rating
    if not keep.any():
        raise DataError(f"no rating in {folder / lay.ratings} is >= {min_rating}; lower min_rating")
    data = Interactions.from_arrays(
        users[keep],
        items[keep],
        rating=rating[keep],
        timestamp=timestamp[keep],
        user_ids=_unique(users),
        item_ids=_unique(items),
    )

    if name == "ml-100k":
        data = _attach_users(data, folder / lay.users, lay, hint, id_=0, age=1, gender=2, occ=3,
                             occ_is_int=False)
    else:
        data = _attach_users(data, folder / lay.users, lay, hint, id_=0, age=2, gender=1, occ=3,
                             occ_is_int=True)
    data = _attach_items(data, folder / lay.items, lay, hint, ml100k=(name == "ml-100k"))
    logger.info("loaded %s from %s: %s", name, folder, data)
    return data


def _attach_users(
    data: Interactions, path: Path, lay: _Layout, hint: str, *, id_: int, age: int, gender: int,
    occ: int, occ_is_int: bool,
) -> Interactions:
    rows, lines, raw = _text_rows(path, lay.sep, 5, lay.users_layout, hint)
    cols = list(zip(*rows, strict=True))
    ids = _field_ints(list(cols[id_]), lines, path, "user id", lay.users_layout, raw)
    ages = _field_ints(list(cols[age]), lines, path, "age", lay.users_layout, raw)
    occupation = (
        _field_ints(list(cols[occ]), lines, path, "occupation", lay.users_layout, raw)
        if occ_is_int
        else np.array(cols[occ], dtype=str)
    )
    _no_duplicates(ids, lines, path, "user")
    try:
        return data.with_user_attributes(
            ids, gender=np.array(cols[gender], dtype=str), age=ages, occupation=occupation
        )
    except DataError as exc:
        raise DataError(f"{path}: {exc}") from exc


def _attach_items(
    data: Interactions, path: Path, lay: _Layout, hint: str, *, ml100k: bool
) -> Interactions:
    nfields = 24 if ml100k else 3
    rows, lines, raw = _text_rows(path, lay.sep, nfields, lay.items_layout, hint)
    cols = list(zip(*rows, strict=True))
    ids = _field_ints(list(cols[0]), lines, path, "movie id", lay.items_layout, raw)
    _no_duplicates(ids, lines, path, "movie")
    titles = np.array(cols[1], dtype=str)
    if ml100k:
        text = np.array(rows, dtype=str)[:, 5:]
        bad = np.flatnonzero(~np.isin(text, ("0", "1")).all(axis=1))
        if bad.size:  # anything but 0/1 would silently read as "not this genre"
            problem = f"genre flags must be 0 or 1, got {text[bad[0]].tolist()}"
            raise _malformed(path, int(lines[bad[0]]), problem, lay.items_layout, raw)
        flags = text == "1"
        names = np.array(_ML100K_GENRES, dtype=object)
        genres = np.array(["|".join(names[f]) for f in flags], dtype=str)
    else:
        genres = np.array(cols[2], dtype=str)
    try:
        return data.with_item_attributes(ids, title=titles, genres=genres)
    except DataError as exc:
        raise DataError(f"{path}: {exc}") from exc


def _no_duplicates(ids: np.ndarray, lines: np.ndarray, path: Path, what: str) -> None:
    order = np.argsort(ids, kind="stable")
    s = ids[order]
    dup = np.flatnonzero(s[1:] == s[:-1])
    if dup.size:
        k = int(order[dup[0] + 1])
        raise DataError(
            f"{path}, line {int(lines[k])}: {what} id {int(ids[k])} appears twice; "
            "delete the duplicate line"
        )
