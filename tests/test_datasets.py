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


# ------------------------------------------- values that must never be silently corrupted
def _write(tmp_path: Path, text: str | bytes, name: str = "d.csv") -> Path:
    p = tmp_path / name
    p.write_bytes(text.encode() if isinstance(text, str) else text)
    return p


@pytest.mark.parametrize("arrow", [True, False])
@pytest.mark.parametrize("col", ["rating", "weight"])
@pytest.mark.parametrize("value", ["1e39", "-3.5e38", "1e300"])
def test_read_csv_float32_overflow_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, arrow: bool, col: str, value: str
) -> None:
    if not arrow:
        monkeypatch.setattr(files_mod, "_pyarrow", lambda: None)
    p = _write(tmp_path, f"user,item,{col}\n1,2,3\n1,3,{value}\n")
    with pytest.raises(DataError, match=rf"d\.csv, line 3: column '{col}'.*overflows float32"):
        read_interactions(p, **{f"{col}_col": col})
    p = _write(tmp_path, f"user,item,{col}\n1,2,3.4e38\n")
    assert np.isfinite(getattr(read_interactions(p, **{f"{col}_col": col}), col)).all()


@pytest.mark.parametrize("arrow", [True, False])
@pytest.mark.parametrize("value", ["99999999999999999999", "9223372036854775808",
                                   "-9223372036854775809", "1e20", "-1e19"])
def test_read_csv_timestamp_beyond_int64_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, arrow: bool, value: str
) -> None:
    if not arrow:
        monkeypatch.setattr(files_mod, "_pyarrow", lambda: None)
    p = _write(tmp_path, f"user,item,ts\n1,2,5\n1,3,{value}\n")
    with pytest.raises(DataError, match=r"line 3: column 'ts'.*does not fit int64 seconds"):
        read_interactions(p, timestamp_col="ts")


def test_read_csv_int64_extremes_are_exact(tmp_path: Path) -> None:
    lo, hi = -(2**63), 2**63 - 1
    p = _write(tmp_path, f"user,item,ts\n{hi},{lo},{hi}\n1234567890123456789,2,{lo}\n")
    for ids in ("auto", "int"):
        d = read_interactions(p, timestamp_col="ts", ids=ids)
        assert d.user_ids.tolist() == [1234567890123456789, hi]
        assert d.item_ids.tolist() == [lo, 2] and d.timestamp.tolist() == [hi, lo]
    p = _write(tmp_path, "user,item\n9223372036854775808,1\n")
    assert read_interactions(p).user_ids.tolist() == ["9223372036854775808"]  # auto: text
    with pytest.raises(DataError, match=r"line 2: column 'user'.*does not fit a 64-bit.*ids='str'"):
        read_interactions(p, ids="int")


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(-(2**64), 2**64), min_size=1, max_size=30), st.booleans())
def test_parse_int_strings_matches_python(values: list[int], canonical: bool) -> None:
    text = np.array([str(v) for v in values])
    vals, ok = files_mod._parse_int_strings(text, canonical)
    fits = np.array([-(2**63) <= v < 2**63 for v in values])
    assert ok.tolist() == fits.tolist()
    assert vals[ok].tolist() == [v for v, f in zip(values, fits, strict=True) if f]


@pytest.mark.parametrize("arrow", [True, False])
@pytest.mark.parametrize("rows", [["1000", "2020-01-01"], ["2020-01-01", "1000"],
                                  ["2020-01-01T00:00:00", "1.6e9"]])
def test_read_csv_mixed_integer_and_iso_timestamps_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, arrow: bool, rows: list[str]
) -> None:
    if not arrow:
        monkeypatch.setattr(files_mod, "_pyarrow", lambda: None)
    p = _write(tmp_path, "user,item,ts\n" + "".join(f"1,{k},{v}\n" for k, v in enumerate(rows)))
    with pytest.raises(DataError, match=r"line 3: column 'ts'.*mixes integer and ISO-8601.*one kind"):
        read_interactions(p, timestamp_col="ts")


def test_read_csv_fractional_iso_seconds_are_refused(tmp_path: Path) -> None:
    p = _write(tmp_path, "user,item,ts\n1,2,2020-01-01T00:00:00\n1,3,2020-01-01T00:00:00.5\n")
    with pytest.raises(DataError, match=r"line 3: column 'ts'.*not a whole number of seconds"):
        read_interactions(p, timestamp_col="ts")
    p = _write(tmp_path, "user,item,ts\n1,2,1.5\n")
    with pytest.raises(DataError, match=r"line 2: column 'ts'.*integer timestamps"):
        read_interactions(p, timestamp_col="ts")
    p = _write(tmp_path, "user,item,ts\n1,2,2020-01-01T00:00:00.000\n1,3,1600000000.0\n")
    with pytest.raises(DataError, match="mixes"):
        read_interactions(p, timestamp_col="ts")
    p = _write(tmp_path, "user,item,ts\n1,2,2020-01-01T00:00:00.000\n1,3,2020-01-01 00:00:10\n")
    assert read_interactions(p, timestamp_col="ts").timestamp.tolist() == [1577836800, 1577836810]


def test_from_arrays_and_reader_agree_on_fractional_timestamps(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="fractional"):
        Interactions.from_arrays([1], [2], timestamp=[1.5])
    with pytest.raises(DataError, match="integer timestamps"):
        read_interactions(_write(tmp_path, "user,item,ts\n1,2,1.5\n"), timestamp_col="ts")


# -------------------------------------------------------------------- Parquet column types
@pytest.fixture
def parquet(tmp_path: Path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")

    def write(**columns: object) -> Path:
        p = tmp_path / "d.parquet"
        cols = {"user": pa.array([1, 2]), "item": pa.array([3, 4])}
        cols.update(columns)
        pq.write_table(pa.table(cols), p)
        return p

    return pa, write


def test_parquet_uint64_ids_are_refused_or_kept_exactly(parquet) -> None:
    pa, write = parquet
    p = write(user=pa.array([1, 2**64 - 1], pa.uint64()))
    for ids in ("auto", "int"):
        with pytest.raises(DataError, match=r"row 2: column 'user' holds 18446744073709551615.*"
                                            r"64-bit.*ids='str'"):
            read_interactions(p, ids=ids)
    assert read_interactions(p, ids="str").user_ids.tolist() == ["1", "18446744073709551615"]
    p = write(user=pa.array([1, 2**63 - 1], pa.uint64()))
    assert read_interactions(p).user_ids.tolist() == [1, 2**63 - 1]


def test_parquet_float_ids_beyond_int64_are_refused(parquet) -> None:
    pa, write = parquet
    for ids in ("auto", "str"):
        with pytest.raises(DataError, match=r"row 2: column 'user' holds 1e\+20.*64-bit"):
            read_interactions(write(user=pa.array([1.0, 1e20])), ids=ids)


@pytest.mark.parametrize("kind", ["struct", "list", "binary", "decimal", "bool", "date"])
def test_parquet_unsupported_id_types_are_refused(parquet, kind: str) -> None:
    import datetime
    import decimal

    pa, write = parquet
    values = {
        "struct": pa.array([{"a": 1}, {"a": 2}]), "list": pa.array([[1], [2, 3]]),
        "binary": pa.array([b"a", b"b"]), "decimal": pa.array([decimal.Decimal("1.5")] * 2),
        "bool": pa.array([True, False]), "date": pa.array([datetime.date(2020, 1, 1)] * 2),
    }[kind]
    with pytest.raises(DataError, match=r"d\.parquet: column 'item' has type .*cannot hold ids; "
                                        r"supported: integers, whole-valued floats or strings"):
        read_interactions(write(item=values))


def test_parquet_unsupported_value_types_are_refused(parquet) -> None:
    pa, write = parquet
    p = write(r=pa.array([[1.0], [2.0]]), ts=pa.array([{"a": 1}, {"a": 2}]))
    with pytest.raises(DataError, match=r"column 'r' has type list.*cannot hold numbers"):
        read_interactions(p, rating_col="r")
    with pytest.raises(DataError, match=r"column 'ts' has type struct.*cannot hold timestamps"):
        read_interactions(p, timestamp_col="ts")
    p = write(ts=pa.array([5, 6], pa.duration("s")))
    with pytest.raises(DataError, match=r"column 'ts' has type duration"):
        read_interactions(p, timestamp_col="ts")


def test_parquet_values_are_exact_or_refused(parquet) -> None:
    pa, write = parquet
    with pytest.raises(DataError, match=r"row 2: column 'ts'.*does not fit int64"):
        read_interactions(write(ts=pa.array([1, 2**64 - 1], pa.uint64())), timestamp_col="ts")
    with pytest.raises(DataError, match=r"row 1: column 'ts'.*does not fit int64"):
        read_interactions(write(ts=pa.array([1e20, 1.0])), timestamp_col="ts")
    ns = pa.array([1_500_000_000_000_000_000, 1_500_000_000_500_000_000], pa.timestamp("ns"))
    with pytest.raises(DataError, match=r"row 2: column 'ts'.*not a whole number of seconds"):
        read_interactions(write(ts=ns), timestamp_col="ts")
    with pytest.raises(DataError, match=r"row 1: column 'r'.*overflows float32"):
        read_interactions(write(r=pa.array([1e39, 1.0])), rating_col="r")
    with pytest.raises(DataError, match=r"row 2: column 'user' holds a NUL"):
        read_interactions(write(user=pa.array(["a", "a\x00"])))
    tz = pa.array([1_500_000_000, 1_500_000_001], pa.timestamp("s", tz="Europe/Paris"))
    d = read_interactions(write(ts=tz, r=pa.array([4, 5], pa.uint64())), timestamp_col="ts",
                          rating_col="r")
    assert d.timestamp.tolist() == [1_500_000_000, 1_500_000_001] and d.rating.tolist() == [4, 5]


# -------------------------------------------------------------------- OS and decoding errors
@pytest.mark.parametrize("arrow", [True, False])
def test_read_csv_bad_utf8_past_the_first_chunk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, arrow: bool
) -> None:
    if not arrow:
        monkeypatch.setattr(files_mod, "_pyarrow", lambda: None)
    n = 300_000  # ~2.4 MB: past the csv module's and pyarrow's first read blocks
    p = _write(tmp_path, b"user,item\n" + b"1,2\n" * n + b"\xff,3\n" + b"4,5\n")
    with pytest.raises(DataError, match=rf"d\.csv, line {n + 2}: byte 0xff is not UTF-8.*UTF-8"):
        read_interactions(p)


def test_read_unreadable_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import builtins

    p = _write(tmp_path, "user,item\n1,2\n")
    real_open = builtins.open

    def deny(file, *args, **kwargs):
        if Path(str(file)) == p:
            raise PermissionError(13, "Permission denied", str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", deny)
    monkeypatch.setattr(files_mod, "_pyarrow", lambda: None)
    with pytest.raises(DataError, match=r"cannot read .*d\.csv \(Permission denied\); check"):
        read_interactions(p)


def test_read_unreadable_file_after_the_header(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pa = pytest.importorskip("pyarrow")
    p = _write(tmp_path, "user,item\n1,2\n")

    def deny(*args, **kwargs):
        raise pa.ArrowIOError("Permission denied")

    monkeypatch.setattr("pyarrow.csv.read_csv", deny)
    monkeypatch.setattr(files_mod, "_csv_stdlib", lambda *a: (_ for _ in ()).throw(
        files_mod._text_error(p, PermissionError(13, "Permission denied"), None)))
    with pytest.raises(DataError, match=r"cannot read .*Permission denied"):
        read_interactions(p)


@pytest.mark.parametrize("name", ["d.csv", "d.parquet"])
def test_read_directory_instead_of_file(tmp_path: Path, name: str) -> None:
    (tmp_path / name).mkdir()
    with pytest.raises(DataError, match=rf"{name} is a directory, not a \w+ file; pass the path"):
        read_interactions(tmp_path / name)


def test_read_csv_huge_field_is_a_data_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    p = _write(tmp_path, "user,item,z\n1,2,3\n1,2,\"" + "x" * 200_000 + "\n1,2,3\n")
    monkeypatch.setattr(files_mod, "_pyarrow", lambda: None)
    with pytest.raises(DataError, match=r"d\.csv, line 3: malformed CSV.*fix that line"):
        read_interactions(p)
    monkeypatch.undo()
    p = _write(tmp_path, "user,item," + "x" * 200_000 + "\n1,2,3\n")
    with pytest.raises(DataError, match=r"line 1: malformed CSV"):
        read_interactions(p)


def test_read_csv_nul_in_a_field(tmp_path: Path) -> None:
    p = _write(tmp_path, b"user,item\n1,2\n3,4\x00\n")
    with pytest.raises(DataError, match=r"line 3: .*NUL"):
        read_interactions(p)


def test_movielens_ratings_path_is_a_directory(tmp_path: Path) -> None:
    folder = _ml100k(tmp_path / "ml")
    (folder / "u.data").unlink()
    (folder / "u.data").mkdir()
    with pytest.raises(DataError, match=r"u\.data is a directory, not a file.*GroupLens"):
        load_movielens("ml-100k", folder)


def test_movielens_huge_user_id_is_a_malformed_line(tmp_path: Path) -> None:
    folder = _ml100k(tmp_path / "ml")
    (folder / "u.user").write_text("1|24|M|technician|85711\n2|53|F|other|94043\n"
                                   "99999999999999999999|23|M|writer|32067\n")
    with pytest.raises(DataError, match=r"u\.user, line 3: .*does not fit a 64-bit integer"):
        load_movielens("ml-100k", folder)


# ------------------------------------------------------------------------- argument types
@pytest.mark.parametrize("path", [None, 3, b"d.csv", 1.5, ["d.csv"]], ids=repr)
def test_read_interactions_path_type(path: object) -> None:
    with pytest.raises(ValidationError, match=r"path must be a str or os\.PathLike"):
        read_interactions(path)


def test_read_interactions_nul_in_path() -> None:
    with pytest.raises(ValidationError, match="NUL character"):
        read_interactions("a\x00b.csv")


@pytest.mark.parametrize("min_rating", [10**400, complex(1, 1), "4", float("nan")], ids=repr)
def test_min_rating_values(tmp_path: Path, min_rating: object) -> None:
    p = _write(tmp_path, "user,item,r\n1,2,3\n")
    with pytest.raises(ValidationError, match=r"min_rating must be a number"):
        read_interactions(p, rating_col="r", min_rating=min_rating)
    with pytest.raises(ValidationError, match=r"min_rating must be a number"):
        load_movielens("ml-100k", _ml100k(tmp_path / "ml"), min_rating=min_rating)


@pytest.mark.parametrize("name", [None, 3, ["ml-100k"], b"ml-100k"], ids=repr)
def test_load_movielens_name_type(tmp_path: Path, name: object) -> None:
    with pytest.raises(ValidationError, match=r"name must be a string, one of \['ml-100k'"):
        load_movielens(name, tmp_path)


@pytest.mark.parametrize("path", [None, 3, b"ml"], ids=repr)
def test_load_movielens_path_type(path: object) -> None:
    with pytest.raises(ValidationError, match=r"path must be a str or os\.PathLike.*ml-100k"):
        load_movielens("ml-100k", path)


@pytest.mark.parametrize(
    ("kwargs", "phrase"),
    [
        ({"n_users": 10**12}, r"n_users must be an integer in \[1, 100,000,000\]"),
        ({"n_users": -5}, r"n_users must be an integer in \[1,"),
        ({"n_users": 5.0}, r"n_users must be an integer.*5\.0 \(float\)"),
        ({"n_users": True}, r"n_users must be an integer.*\(bool\)"),
        ({"n_users": "100"}, r"n_users must be an integer.*'100' \(str\)"),
        ({"n_items": 10**9}, r"n_items must be an integer in \[1, 10,000,000\]"),
        ({"n_items": None}, r"n_items must be an integer.*NoneType"),
        ({"n_factors": 10**6}, r"n_factors must be an integer in \[1, 1,024\]"),
        ({"n_users": 10**6, "n_items": 10**6}, r"n_users \* n_items.*lower n_users or n_items"),
        ({"n_users": 10**6, "n_factors": 1000}, r"latent values.*lower n_factors"),
        ({"n_users": 10**7, "n_items": 1000}, r"records would be generated.*lower n_users"),
        ({"mean_interactions": float("inf")}, r"mean_interactions must be a finite number > 0"),
        ({"mean_interactions": float("nan")}, r"mean_interactions must be a finite number"),
        ({"mean_interactions": 10**400}, r"mean_interactions must be a finite number"),
        ({"mean_interactions": "30"}, r"mean_interactions must be a finite number"),
        ({"seed": -1}, r"seed must be an integer >= 0"),
        ({"seed": 1.5}, r"seed must be an integer >= 0"),
        ({"n_users": 10**5000}, r"n_users must be an integer.*many digits"),
    ],
)
def test_synthetic_refuses_absurd_sizes_before_allocating(kwargs: dict, phrase: str) -> None:
    with pytest.raises(ValidationError, match=phrase):
        synthetic(**kwargs)


def test_movielens_genre_flags_must_be_binary(tmp_path: Path) -> None:
    folder = _ml100k(tmp_path / "ml")
    lines = (folder / "u.item").read_bytes().decode("latin-1").splitlines()
    lines[1] = lines[1][:-1] + "2"  # the last genre flag of line 2
    (folder / "u.item").write_bytes(("\n".join(lines) + "\n").encode("latin-1"))
    with pytest.raises(DataError, match=r"u\.item, line 2: .*genre flags must be 0 or 1"):
        load_movielens("ml-100k", folder)
