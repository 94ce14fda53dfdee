"""Tests of sisakit.datasets: the synthetic generator, MovieLens loaders and file readers."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sisakit.data import Interactions
from sisakit.datasets import files as files_mod
from sisakit.datasets import load_movielens, read_interactions, synthetic
from sisakit.errors import DataError, ValidationError

_REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SISAKIT_DATA", _REPO / ".." / "shared" / "data"))


# ------------------------------------------------------------------------------- synthetic
@pytest.fixture(scope="module")
def syn() -> Interactions:
    return synthetic(1500, 400, seed=3)


def _arrays(d: Interactions) -> list[np.ndarray]:
    return [
        d.user_idx, d.item_idx, d.record_id, d.rating, d.timestamp, d.user_ids, d.item_ids,
        d.user_attributes["gender"], d.user_attributes["age_group"],
    ]


def test_synthetic_same_seed_is_identical() -> None:
    a, b = synthetic(300, 120, seed=11), synthetic(300, 120, seed=11)
    for x, y in zip(_arrays(a), _arrays(b), strict=True):
        assert np.array_equal(x, y)


def test_synthetic_different_seed_differs() -> None:
    a, b = synthetic(300, 120, seed=1), synthetic(300, 120, seed=2)
    assert len(a) != len(b) or not np.array_equal(a.item_idx, b.item_idx)
    assert not np.array_equal(a.user_attributes["gender"], b.user_attributes["gender"])


def test_synthetic_id_space_and_columns(syn: Interactions) -> None:
    assert np.array_equal(syn.user_ids, np.arange(1, 1501))
    assert np.array_equal(syn.item_ids, np.arange(1, 401))
    assert syn.rating is not None and syn.timestamp is not None
    assert set(np.unique(syn.rating).tolist()) <= {1.0, 2.0, 3.0, 4.0, 5.0}
    assert len(np.unique(syn.rating)) >= 4
    assert syn.timestamp.dtype == np.int64
    g, a = syn.user_attributes["gender"], syn.user_attributes["age_group"]
    assert g.dtype == np.int8 and set(np.unique(g).tolist()) == {0, 1}
    assert set(np.unique(a).tolist()) == {0, 1, 2}


def test_synthetic_sampling_without_replacement(syn: Interactions) -> None:
    keys = syn.user_idx * syn.n_items + syn.item_idx
    assert len(np.unique(keys)) == len(syn)


def test_synthetic_activity_is_long_tailed(syn: Interactions) -> None:
    c = syn.user_counts()
    assert c.min() >= 3
    assert c.max() <= syn.n_items // 2
    assert c.max() >= 5 * np.median(c)
    assert 20 <= c.mean() <= 40  # mean_interactions=30
    ic = syn.item_counts()
    assert ic.max() >= 10 * max(np.median(ic), 1)  # popularity is long-tailed too


def test_synthetic_timestamps_increase_within_user(syn: Interactions) -> None:
    order = np.lexsort((syn.record_id, syn.user_idx))
    u, t = syn.user_idx[order], syn.timestamp[order]
    same = u[1:] == u[:-1]
    assert np.all(t[1:][same] > t[:-1][same])


def test_synthetic_gender_is_learnable(syn: Interactions) -> None:
    from sklearn.linear_model import LogisticRegression

    x = syn.to_csr()
    y = syn.user_attributes["gender"]
    clf = LogisticRegression(max_iter=500).fit(x[:1000], y[:1000])
    acc = clf.score(x[1000:], y[1000:])
    assert acc > 0.6, acc


def test_synthetic_large_shape() -> None:
    d = synthetic(6000, 3000)
    assert d.n_users == 6000 and d.n_items == 3000
    assert (d.user_counts() >= 3).all()


def test_synthetic_tiny_item_space() -> None:
    d = synthetic(20, 2, seed=0)
    assert d.user_counts().min() >= 1 and d.user_counts().max() <= 2
    assert len(np.unique(d.user_idx * 2 + d.item_idx)) == len(d)


@pytest.mark.parametrize(
    "kwargs",
    [{"n_users": 0}, {"n_items": -1}, {"mean_interactions": 0}, {"seed": "a"}, {"n_factors": 1.5}],
)
def test_synthetic_rejects_bad_arguments(kwargs: dict) -> None:
    with pytest.raises(ValidationError):
        synthetic(**kwargs)


# ----------------------------------------------------------------------- MovieLens fixtures
def _ml100k(folder: Path, data_lines: list[str] | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    lines = data_lines or [
        "1\t10\t5\t881250949",
        "1\t20\t3\t881250950",
        "2\t10\t4\t891717742",
        "3\t30\t1\t878887116",
    ]
    (folder / "u.data").write_text("\n".join(lines) + "\n")
    (folder / "u.user").write_text(
        "1|24|M|technician|85711\n2|53|F|other|94043\n3|23|M|writer|32067\n"
    )
    flags = ["0"] * 19
    action = flags.copy()
    action[1] = "1"
    rows = [
        ["10", "Toy Story (1995)", "01-Jan-1995", "", "http://x", *flags],
        ["20", "Café Society (1995)", "01-Jan-1995", "", "http://y", *action],
        ["30", "Other (1996)", "01-Jan-1996", "", "http://z", *flags],
    ]
    (folder / "u.item").write_bytes(("\n".join("|".join(r) for r in rows) + "\n").encode("latin-1"))
    return folder


def _ml1m(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "ratings.dat").write_text(
        "1::1193::5::978300760\n1::661::3::978302109\n2::1193::4::978298413\n"
    )
    (folder / "users.dat").write_text("1::F::1::10::48067\n2::M::56::16::70072\n")
    (folder / "movies.dat").write_bytes(
        "661::James and the Giant Peach (1996)::Animation|Children's|Musical\n"
        "1193::One Flew Over the Cuckoo's Nest: Été (1975)::Drama\n"
        "5::Unrated (1995)::Comedy\n".encode("latin-1")
    )
    return folder


# ------------------------------------------------------------------------------ MovieLens
def test_ml100k_loads_records_and_attributes(tmp_path: Path) -> None:
    d = load_movielens("ml-100k", _ml100k(tmp_path / "ml-100k"))
    assert len(d) == 4 and d.n_users == 3 and d.n_items == 3
    assert d.user_ids.dtype.kind == "i" and d.item_ids.tolist() == [10, 20, 30]
    assert d.rating.tolist() == [5.0, 3.0, 4.0, 1.0]
    assert d.timestamp.tolist()[0] == 881250949
    assert d.user_attributes["gender"].tolist() == ["M", "F", "M"]
    assert d.user_attributes["age"].tolist() == [24, 53, 23]
    assert d.user_attributes["occupation"].tolist() == ["technician", "other", "writer"]
    assert d.item_attributes["title"][1] == "Café Society (1995)"
    assert d.item_attributes["genres"].tolist() == ["", "Action", ""]


def test_ml1m_loads_records_and_attributes(tmp_path: Path) -> None:
    d = load_movielens("ml-1m", _ml1m(tmp_path / "x"))
    assert len(d) == 3 and d.n_users == 2 and d.item_ids.tolist() == [661, 1193]
    assert d.user_attributes["gender"].tolist() == ["F", "M"]
    assert d.user_attributes["age"].tolist() == [1, 56]
    assert d.user_attributes["occupation"].dtype.kind == "i"
    assert d.user_attributes["occupation"].tolist() == [10, 16]
    assert d.item_attributes["title"][1] == "One Flew Over the Cuckoo's Nest: Été (1975)"
    assert d.item_attributes["genres"][0] == "Animation|Children's|Musical"


def test_movielens_accepts_parent_folder_and_crlf(tmp_path: Path) -> None:
    folder = _ml1m(tmp_path / "ml-1m")
    raw = (folder / "ratings.dat").read_bytes()
    (folder / "ratings.dat").write_bytes(raw.replace(b"\n", b"\r\n"))
    d = load_movielens("ml-1m", tmp_path)
    assert len(d) == 3 and d.rating.tolist() == [5.0, 3.0, 4.0]


def test_movielens_min_rating_keeps_id_space(tmp_path: Path) -> None:
    folder = _ml100k(tmp_path)
    full = load_movielens("ml-100k", folder)
    pos = load_movielens("ml-100k", folder, min_rating=4)
    assert len(pos) == 2 and pos.rating.min() >= 4
    assert pos.same_space(full)
    assert pos.user_counts().tolist() == [1, 1, 0]


def test_movielens_unknown_name(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match=r"ml-100k.*ml-1m"):
        load_movielens("ml-20m", tmp_path)


def test_movielens_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="GroupLens") as info:
        load_movielens("ml-100k", tmp_path / "nope")
    assert "nope" in str(info.value) and "folder that contains" in str(info.value)


def test_movielens_missing_file(tmp_path: Path) -> None:
    folder = _ml100k(tmp_path)
    (folder / "u.item").unlink()
    with pytest.raises(DataError, match=r"u\.item.*folder that contains.*never ships"):
        load_movielens("ml-100k", folder)


def test_movielens_path_is_a_file(tmp_path: Path) -> None:
    folder = _ml100k(tmp_path)
    with pytest.raises(DataError, match="folder that contains"):
        load_movielens("ml-100k", folder / "u.data")


@pytest.mark.parametrize(
    ("bad", "problem"),
    [
        ("3\t30\t1", "expected 4 fields"),
        ("3\t30\tx\t878887116", "unexpected character"),
        ("3\t\t1\t878887116", "empty"),
        ("", "expected 4 fields"),
        ("3\t30\t1\t8788871\t16", "expected 4 fields"),
    ],
)
def test_movielens_malformed_ratings_line(tmp_path: Path, bad: str, problem: str) -> None:
    lines = ["1\t10\t5\t881250949", "2\t10\t4\t891717742", bad, "3\t30\t1\t878887116"]
    folder = _ml100k(tmp_path, lines)
    with pytest.raises(DataError) as info:
        load_movielens("ml-100k", folder)
    msg = str(info.value)
    assert "u.data, line 3" in msg and problem in msg and "fix or delete" in msg


def test_ml1m_malformed_separator(tmp_path: Path) -> None:
    folder = _ml1m(tmp_path)
    (folder / "ratings.dat").write_text("1::1193::5::978300760\n1:661::3::978302109\n")
    with pytest.raises(DataError, match=r"ratings\.dat, line 2"):
        load_movielens("ml-1m", folder)


def test_movielens_malformed_users_line(tmp_path: Path) -> None:
    folder = _ml100k(tmp_path)
    (folder / "u.user").write_text("1|24|M|technician|85711\n2|x|F|other|94043\n3|23|M|w|1\n")
    with pytest.raises(DataError, match=r"u\.user, line 2.*age 'x'"):
        load_movielens("ml-100k", folder)
    (folder / "u.user").write_text("1|24|M|technician|85711\n2|53|F|other\n")
    with pytest.raises(DataError, match=r"u\.user, line 2.*expected 5 fields"):
        load_movielens("ml-100k", folder)


def test_movielens_duplicate_and_missing_users(tmp_path: Path) -> None:
    folder = _ml100k(tmp_path)
    (folder / "u.user").write_text("1|24|M|a|1\n2|53|F|b|2\n1|23|M|c|3\n")
    with pytest.raises(DataError, match=r"u\.user, line 3.*twice"):
        load_movielens("ml-100k", folder)
    (folder / "u.user").write_text("1|24|M|a|1\n2|53|F|b|2\n")
    with pytest.raises(DataError, match=r"u\.user.*lacks"):
        load_movielens("ml-100k", folder)


@settings(max_examples=40, deadline=None)
@given(
    table=st.lists(
        st.lists(st.integers(0, 10**12), min_size=4, max_size=4), min_size=1, max_size=60
    ),
    chunk=st.integers(8, 200),
    crlf=st.booleans(),
    sep=st.sampled_from(["\t", "::"]),
)
def test_int_table_parser_matches_python(
    tmp_path_factory: pytest.TempPathFactory, table: list[list[int]], chunk: int, crlf: bool,
    sep: str,
) -> None:
    path = tmp_path_factory.mktemp("t") / "r.dat"
    nl = "\r\n" if crlf else "\n"
    path.write_text(nl.join(sep.join(map(str, r)) for r in table) + nl, newline="")
    old = files_mod._CHUNK_BYTES
    files_mod._CHUNK_BYTES = chunk
    try:
        got = files_mod._int_table(path, sep, 4, "four integers", "hint")
    finally:
        files_mod._CHUNK_BYTES = old
    assert np.array_equal(got, np.array(table, dtype=np.int64))


def test_int_table_line_numbers_across_chunks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lines = [f"{k}\t{k + 1}\t3\t{1000 + k}" for k in range(200)]
    lines[137] = "137\t138\t3"
    path = tmp_path / "u.data"
    path.write_text("\n".join(lines) + "\n")
    monkeypatch.setattr(files_mod, "_CHUNK_BYTES", 64)
    with pytest.raises(DataError, match=r"u\.data, line 138"):
        files_mod._int_table(path, "\t", 4, "four integers", "hint")


@pytest.mark.skipif(not (SHARED / "ml-100k" / "u.data").exists(), reason="no local MovieLens copy")
def test_real_ml100k() -> None:
    d = load_movielens("ml-100k", SHARED / "ml-100k")
    assert len(d) == 100_000 and d.n_users == 943 and d.n_items == 1682
    assert set(np.unique(d.user_attributes["gender"]).tolist()) == {"F", "M"}
    assert d.item_attributes["title"][0] == "Toy Story (1995)"


# -------------------------------------------------------------------------- read_interactions
def test_read_csv_int_ids_and_columns(tmp_path: Path) -> None:
    p = tmp_path / "r.csv"
    p.write_text("user,item,rating,ts\n1,10,4.5,100\n2,10,3,101\n1,20,5,102\n")
    d = read_interactions(p, rating_col="rating", timestamp_col="ts")
    assert d.user_ids.dtype.kind == "i" and d.user_ids.tolist() == [1, 2]
    assert d.item_ids.tolist() == [10, 20]
    assert d.rating.tolist() == [4.5, 3.0, 5.0]
    assert d.timestamp.tolist() == [100, 101, 102]


@pytest.mark.parametrize("arrow", [True, False])
def test_read_csv_string_ids_and_modes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, arrow: bool
) -> None:
    if not arrow:
        monkeypatch.setattr(files_mod, "_pyarrow", lambda: None)
    p = tmp_path / "r.tsv"
    p.write_text("u\ti\n007\ta\n7\tb\n 8 \tc\n")
    d = read_interactions(p, user_col="u", item_col="i")
    assert d.user_ids.tolist() == ["007", "7", "8"] and d.item_ids.tolist() == ["a", "b", "c"]
    d = read_interactions(p, user_col="u", item_col="i", ids="str")
    assert d.user_ids.tolist() == ["007", "7", "8"]
    with pytest.raises(DataError, match=r"r\.tsv, line 2: column 'i'"):
        read_interactions(p, user_col="u", item_col="i", ids="int")
    q = tmp_path / "q.csv"
    q.write_text("user,item\n007,1\n7,2\n8,2\n")
    d = read_interactions(q, ids="int")
    assert d.user_ids.tolist() == [7, 8] and d.user_counts().tolist() == [2, 1]
    d = read_interactions(q)
    assert d.item_ids.dtype.kind == "i" and d.user_ids.dtype.kind == "U"


def test_read_csv_missing_column(tmp_path: Path) -> None:
    p = tmp_path / "r.csv"
    p.write_text("userId,movieId\n1,2\n")
    with pytest.raises(DataError, match=r"no column 'user'.*\['userId', 'movieId'\]"):
        read_interactions(p)


@pytest.mark.parametrize("arrow", [True, False])
@pytest.mark.parametrize("bad", ["nan", "", "x"])
def test_read_csv_bad_rating_names_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, arrow: bool, bad: str
) -> None:
    if not arrow:
        monkeypatch.setattr(files_mod, "_pyarrow", lambda: None)
    p = tmp_path / "r.csv"
    p.write_text(f"user,item,rating\n1,2,3\n\n1,3,{bad}\n")
    with pytest.raises(DataError, match=r"r\.csv, line 4: column 'rating'"):
        read_interactions(p, rating_col="rating")


@pytest.mark.parametrize("arrow", [True, False])
def test_read_csv_wrong_field_count(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, arrow: bool
) -> None:
    if not arrow:
        monkeypatch.setattr(files_mod, "_pyarrow", lambda: None)
    p = tmp_path / "r.csv"
    p.write_text("user,item\n1,2\n1,3,4\n")
    with pytest.raises(DataError, match=r"r\.csv, line 3: malformed"):
        read_interactions(p)


def test_read_csv_without_pyarrow_matches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    p = tmp_path / "r.csv"
    p.write_text(
        'user,item,rating,when\r\n1,"a,b",4,2020-01-01\r\n2,c,2,2020-01-02 00:00:10\r\n'
    )
    a = read_interactions(p, rating_col="rating", timestamp_col="when")
    monkeypatch.setattr(files_mod, "_pyarrow", lambda: None)
    b = read_interactions(p, rating_col="rating", timestamp_col="when")
    assert a.item_ids.tolist() == ["a,b", "c"]
    assert a.timestamp.tolist() == [1577836800, 1577923210]
    for x, y in zip(_arrays_no_attr(a), _arrays_no_attr(b), strict=True):
        assert np.array_equal(x, y)


def _arrays_no_attr(d: Interactions) -> list[np.ndarray]:
    return [d.user_idx, d.item_idx, d.rating, d.timestamp, d.user_ids, d.item_ids]


def test_read_min_rating_keeps_id_space(tmp_path: Path) -> None:
    p = tmp_path / "r.csv"
    p.write_text("user,item,rating\n1,10,5\n2,10,1\n2,20,4\n3,30,2\n")
    d = read_interactions(p, rating_col="rating", min_rating=4)
    assert len(d) == 2 and d.n_users == 3 and d.n_items == 3
    with pytest.raises(ValidationError, match="rating_col"):
        read_interactions(p, min_rating=4)
    with pytest.raises(DataError, match="lower min_rating"):
        read_interactions(p, rating_col="rating", min_rating=6)


def test_read_format_and_argument_errors(tmp_path: Path) -> None:
    p = tmp_path / "r.txt"
    p.write_text("user;item\n1;2\n")
    with pytest.raises(ValidationError, match="format"):
        read_interactions(p)
    assert len(read_interactions(p, sep=";")) == 1
    with pytest.raises(ValidationError, match="sep"):
        read_interactions(p, sep="::")
    with pytest.raises(ValidationError, match="format"):
        read_interactions(p, format="xlsx")
    with pytest.raises(ValidationError, match="ids"):
        read_interactions(p, sep=";", ids="float")
    with pytest.raises(DataError, match="not found"):
        read_interactions(tmp_path / "missing.csv")


def test_read_parquet(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    p = tmp_path / "r.parquet"
    table = pa.table({
        "userID": pa.array(["1", "1", "22"]),
        "movieID": pa.array(["1193", "661", "1193"]).dictionary_encode(),
        "rating": pa.array([5.0, 3.0, 4.0]),
        "ts": pa.array([3, 2, 1], pa.int32()),
    })
    pq.write_table(table, p)
    d = read_interactions(p, user_col="userID", item_col="movieID", rating_col="rating",
                          timestamp_col="ts")
    assert d.user_ids.tolist() == [1, 22] and d.item_ids.tolist() == [661, 1193]
    assert d.rating.tolist() == [5.0, 3.0, 4.0] and d.timestamp.tolist() == [3, 2, 1]
    d = read_interactions(p, user_col="userID", item_col="movieID", ids="str")
    assert d.user_ids.tolist() == ["1", "22"]
    with pytest.raises(DataError, match=r"no column 'user'.*userID"):
        read_interactions(p)


def test_read_parquet_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    p = tmp_path / "r.pq"
    pq.write_table(pa.table({"user": [1, 2], "item": [3, 4], "rating": [1.0, float("nan")]}), p)
    with pytest.raises(DataError, match=r"r\.pq, row 2: column 'rating'.*NaN"):
        read_interactions(p, rating_col="rating")
    pq.write_table(pa.table({"user": [1, None], "item": [3, 4]}), p)
    with pytest.raises(DataError, match=r"row 2: column 'user' is null"):
        read_interactions(p)
    monkeypatch.setattr(files_mod, "_pyarrow", lambda: None)
    with pytest.raises(DataError, match="pip install pyarrow"):
        read_interactions(p)
