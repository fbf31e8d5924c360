"""Dataset loaders (the shipped data, round trips, malformed files with file:line errors) and the replay's order."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from streams.datasets import _check_events, _events_valid, DataError, load_dataset, load_jsonl, load_news, load_rt_file, write_jsonl, write_news

ROOT = Path(__file__).resolve().parents[1]


def test_shipped_real_cascades():
    d = load_dataset(ROOT / "data" / "seismic-tideh")
    assert len(d) == 50
    assert [c.cid for c in d.cascades[:3]] == ["RT1", "RT2", "RT3"]
    for c in d.cascades:
        assert c.times[0] == 0.0 and (np.diff(c.times) >= 0).all()
        assert c.size == c.times.size > 2000
    first = (ROOT / "data" / "seismic-tideh" / "RT1.txt").read_text().splitlines()
    assert d.cascades[0].size == int(first[0].split()[0]) + 1
    assert (ROOT / "data" / "seismic-tideh" / "SOURCE.md").exists()


def test_shipped_sample_with_truth():
    d = load_dataset(ROOT / "data" / "sample")
    assert len(d) == 200 and d.truth is not None and len(d.truth) == 200
    for c, tr in zip(d.cascades, d.truth):
        assert c.size == tr["size"] >= 10
        assert tr["n_star"] == pytest.approx(tr["p"] * tr["mu"] * (tr["alpha"] - 1) / (tr["alpha"] - 2))


def test_news_fast_reader_equals_the_careful_one(monkeypatch):
    """The one-call CSV reader (numpy) gives the row-by-row reader's cascades exactly, and stands aside
    (None) for a file that is not plainly well formed, so that the careful reader names the line."""
    import streams.datasets as ds

    fast = load_news(ROOT / "data" / "sample")
    monkeypatch.setattr(ds, "_read_floats", lambda path, names: None)  # the careful reader alone
    careful = load_news(ROOT / "data" / "sample")
    assert len(fast) == len(careful) == 200
    for a, b in zip(fast.cascades, careful.cascades):
        assert (a.cid, a.final_size) == (b.cid, b.final_size)
        assert np.array_equal(a.times, b.times) and np.array_equal(a.marks, b.marks)


@pytest.mark.parametrize("body", ["1,2\n\n3,4\n", "1,2\n3\n", "1,x\n", "1,inf\n", "1,2\n3,nan\n", '"1",2\n'])
def test_news_fast_reader_stands_aside_for_odd_files(tmp_path, body):
    from streams.datasets import _read_floats

    (tmp_path / "d.csv").write_text("time,magnitude\n" + body)
    assert _read_floats(tmp_path / "d.csv", ("time", "magnitude")) is None
    (tmp_path / "ok.csv").write_text("time,magnitude,other\n1,2,a\n3.5,4e2,b")
    np.testing.assert_array_equal(_read_floats(tmp_path / "ok.csv", ("time", "magnitude")), [[1, 2], [3.5, 400]])


def test_json_rows_reads_numbers_as_float_does_and_only_rows_of_plain_numbers():
    """The one-array JSON reader of :func:`streams.datasets._read_floats` reads every number exactly as
    ``float()`` does (17 significant digits, exponents, subnormals, signs) and stands aside (None) for
    rows it cannot place: a wrong count of fields in some row, even with the right total, or a value
    that is not a plain number (numpy's reader or the careful one then decides)."""
    from streams.datasets import _json_rows

    rng = np.random.default_rng(0)
    x = np.concatenate([rng.standard_normal(2000) * 10.0 ** rng.integers(-300, 300, 2000),
                        rng.random(2000), [0.0, -0.0, 5e-324, 1.7976931348623157e308, 1e22, 123456789012345678.0]])
    texts = [repr(float(v)) for v in x] + [f"{v:.25g}" for v in x[:500]] + [f"{v:.3E}" for v in x[:500]]
    texts += ["1", "-7", "0.1000000000000000055511151231257827", "2.4703282292062328e-324", " 3.5 "]
    texts = texts[: len(texts) // 2 * 2]
    body = "\n".join(",".join(texts[i:i + 2]) for i in range(0, len(texts), 2))
    got = _json_rows(("a,b\n" + body + "\r\n").encode(), 2)
    assert got is not None and got.shape == (len(texts) // 2, 2)
    assert np.array_equal(got.ravel().view(np.int64), np.array([float(t) for t in texts]).view(np.int64))
    for odd in ["1,2,3\n4", "1,2\n\n3,4", "1,x", "1,nan", "1,inf", '"1",2', "1,,2\n3", "1,2\t", ".5,1", "1,2e"]:
        assert _json_rows(b"a,b\n" + odd.encode(), 2) is None, odd
    assert _json_rows(b"a,b\n", 2) is None and _json_rows(b"a,b", 2) is None
    shipped = (ROOT / "data" / "sample" / "news-data.csv").read_bytes()  # the fast path is the one taken
    assert np.array_equal(_json_rows(shipped, 2), np.loadtxt(ROOT / "data" / "sample" / "news-data.csv",
                                                             delimiter=",", skiprows=1))


def test_news_round_trip_and_relative_times(tmp_path):
    cascades = [(np.array([0.0, 1.5, 7.25]), np.array([100.0, 3.0, 0.0])), (np.array([0.0, 2.0]), np.array([5.0, 6.0]))]
    write_news(tmp_path, cascades, truth=[{"p": 0.01, "beta": 1e-3, "alpha": 2.4, "mu": 10}] * 2)
    d = load_news(tmp_path)
    assert [c.size for c in d.cascades] == [3, 2]
    np.testing.assert_allclose(d.cascades[0].times, cascades[0][0])
    np.testing.assert_allclose(d.cascades[1].marks, cascades[1][1])
    # course layout with absolute times: made relative to each cascade's first event
    (tmp_path / "data.csv").write_text("time,magnitude\n100,5\n130,2\n")
    (tmp_path / "index.csv").write_text('"","start_ind","end_ind"\n"1",1,2\n')
    for f in ("news-data.csv", "news-index.csv", "truth.jsonl"):
        (tmp_path / f).unlink()
    d = load_news(tmp_path)
    np.testing.assert_allclose(d.cascades[0].times, [0.0, 30.0])


def test_jsonl_round_trip(tmp_path):
    d = load_dataset(ROOT / "data" / "sample")
    write_jsonl(tmp_path / "c.jsonl", d.cascades[:5])
    back = load_jsonl(tmp_path / "c.jsonl")
    assert [c.cid for c in back.cascades] == [c.cid for c in d.cascades[:5]]
    for a, b in zip(back.cascades, d.cascades):
        np.testing.assert_allclose(a.times, b.times)
        assert a.size == b.size


def _news(tmp_path, data, index):
    (tmp_path / "news-data.csv").write_text(data)
    (tmp_path / "news-index.csv").write_text(index)
    return tmp_path


@pytest.mark.parametrize(
    "data, index, where, match",
    [
        ("time,magnitude\n0,1\n1,x\n", "start_ind,end_ind\n1,2\n", "news-data.csv:3", "magnitude is not a number"),
        ("time,magnitude\n0,1\nnan,2\n", "start_ind,end_ind\n1,2\n", "news-data.csv:3", "not finite"),
        ("time,mag\n0,1\n", "start_ind,end_ind\n1,1\n", "news-data.csv:1", "missing column 'magnitude'"),
        ("time,magnitude\n0,1\n1,2\n", "start_ind,end_ind\n1,3\n", "news-index.csv:2", "row range 1..3"),
        ("time,magnitude\n0,1\n1,2\n", "start_ind,end_ind\n2,1\n", "news-index.csv:2", "row range 2..1"),
        ("time,magnitude\n0,1\n1,2\n", "start_ind,end_ind\na,2\n", "news-index.csv:2", "integers"),
        ("time,magnitude\n5,1\n1,2\n", "start_ind,end_ind\n1,2\n", "news-data.csv:2", "not sorted"),
        ("time,magnitude\n0,-1\n1,2\n", "start_ind,end_ind\n1,2\n", "news-data.csv:2", "negative mark"),
        ("time,magnitude\n0\n", "start_ind,end_ind\n1,1\n", "news-data.csv:2", "expected at least 2 columns"),
    ],
)
def test_malformed_news(tmp_path, data, index, where, match):
    _news(tmp_path, data, index)
    with pytest.raises(DataError, match=match) as err:
        load_news(tmp_path)
    assert where in str(err.value)


def test_all_cascades_checked_at_once_as_one_by_one():
    """The loader checks every cascade's events in one pass and names the faulty one only if that pass
    fails: it passes exactly when each cascade's own check does, over ranges that overlap, leave rows out
    and decrease at a cascade's first row (allowed) or within one (not)."""
    rng = np.random.default_rng(3)
    outcomes = set()
    for _ in range(400):
        rows = int(rng.integers(1, 30))
        data = np.column_stack([np.sort(rng.uniform(0, 100, rows)), rng.uniform(0, 10, rows)])
        a = rng.integers(1, rows + 1, int(rng.integers(1, 6)))
        ranges = np.column_stack([a, [rng.integers(x, rows + 1) for x in a]])
        fault = rng.integers(0, 4)
        i = int(rng.integers(0, rows))
        if fault == 1 and i > 0:
            data[i, 0] = data[i - 1, 0] - 1.0  # a decrease: legal only where no range holds rows i - 1 and i
        elif fault == 2:
            data[i, 1] = -1.0
        elif fault == 3:
            data[i, int(rng.integers(0, 2))] = np.inf
        one_by_one = True
        for x, y in ranges:
            try:
                _check_events(Path("d"), 2, "c", data[x - 1:y, 0], data[x - 1:y, 1])
            except DataError:
                one_by_one = False
        assert _events_valid(data, ranges) == one_by_one, (data, ranges)
        outcomes.add((int(fault), one_by_one))
    assert {(1, True), (1, False), (0, True)} <= outcomes  # both sides of the boundary case were drawn


@pytest.mark.parametrize(
    "text, line, match",
    [
        ("", 1, "empty file"),
        ("3\n0 10\n", 1, "header must be"),
        ("x 0.5\n0 10\n", 1, "not an integer"),
        ("2 0.5\n0 10\n5 3\n", 1, "header says 2 retweets but the file holds 1"),
        ("1 0.5\n0 10\n5\n", 3, "expected '<seconds> <followers>'"),
        ("1 0.5\n0 10\n5 abc\n", 3, "follower count is not a number"),
        ("1 0.5\n0 10\n-5 1\n", 2, "not sorted"),
    ],
)
def test_malformed_rt(tmp_path, text, line, match):
    f = tmp_path / "RT7.txt"
    f.write_text(text)
    with pytest.raises(DataError, match=match) as err:
        load_rt_file(f)
    assert f"RT7.txt:{line}" in str(err.value)


@pytest.mark.parametrize(
    "text, line, match",
    [
        ('{"cid": "a", "tweets": [[0, 1]]}\n{not json\n', 2, "invalid JSON"),
        ('{"cid": "a"}\n', 1, "'tweets' list"),
        ('{"cid": "a", "tweets": [[0, 1, 2]]}\n', 1, "pairs"),
        ('{"cid": "a", "tweets": [[0, "x"]]}\n', 1, "number pairs"),
        ('{"cid": "a", "tweets": [[0, 1], [1, 1]], "n_tot": 1}\n', 1, "n_tot"),
        ('{"cid": "a", "tweets": []}\n', 1, "pairs"),
    ],
)
def test_malformed_jsonl(tmp_path, text, line, match):
    f = tmp_path / "c.jsonl"
    f.write_text(text)
    with pytest.raises(DataError, match=match) as err:
        load_jsonl(f)
    assert f"c.jsonl:{line}" in str(err.value)


def test_unknown_paths(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        load_dataset(tmp_path / "missing")
    with pytest.raises(DataError, match="neither a NEWS layout"):
        load_dataset(tmp_path)
    (tmp_path / "x.csv").write_text("a\n")
    with pytest.raises(DataError, match="unknown dataset format"):
        load_dataset(tmp_path / "x.csv")


@pytest.mark.parametrize("times", ["decimals", "few ties", "many ties", "whole seconds", "empty"])
def test_replay_order_is_by_time_then_original_post_first_then_position(times):
    """The replay's order (``_time_order``: a stable sort, then the ties sorted again) is
    ``np.lexsort((index, t))``'s, whichever path it takes: few shared times, many, times in whole seconds."""
    from streams.replay import _time_order

    rng = np.random.default_rng(3)
    for _ in range(50):
        n = 0 if times == "empty" else int(rng.integers(1, 400))
        t = rng.random(n) * 100
        if times == "few ties":
            t[rng.random(n) < 0.03] = 50.5
        elif times == "many ties":
            t = np.round(t, 0) + 0.25
        elif times == "whole seconds":
            t = np.floor(t)
        index = rng.integers(0, 4, n)
        assert np.array_equal(_time_order(t, index), np.lexsort((index, t)))
