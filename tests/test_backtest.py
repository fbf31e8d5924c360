"""`tweetoscope backtest` and `tweetoscope simulate`: outputs, predictors, leakage, errors."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from estimators.correction import fit_forest, predict_omega
from streams.datasets import load_dataset, write_jsonl
from estimators.marks import pareto_mean
from estimators.forecast import forecast_size
from estimators.metrics import best_constant
from estimators.simulate import SIMULATION_LAWS
from tweetoscope.backtest import PREDICTORS, backtest, constant_forecasts, cross_validated_forecasts, fit_window, splits
from tweetoscope.cli import main
from tweetoscope.config import Settings
from tweetoscope.learner import train_model
from tweetoscope.models import load_model

ROOT = Path(__file__).resolve().parents[1]
FAST = Settings(windows=(600, 1200), forest_trees=20, cv_folds=3)


@pytest.fixture(scope="module")
def small_sim(tmp_path_factory):
    out = tmp_path_factory.mktemp("sim")
    assert main(["simulate", str(out), "--n", "60", "--seed", "5"]) == 0
    return out


def test_simulate_writes_news_layout_with_truth(small_sim):
    d = load_dataset(small_sim)
    assert len(d) == 60 and len(d.truth) == 60
    assert all(c.size >= 10 for c in d.cascades)
    # seeded: the same command gives the same files
    again = small_sim.parent / "again"
    main(["simulate", str(again), "--n", "60", "--seed", "5"])
    assert (again / "news-data.csv").read_bytes() == (small_sim / "news-data.csv").read_bytes()


def test_backtest_report_has_every_predictor_and_consistent_counts(small_sim):
    d = load_dataset(small_sim)
    report = backtest(d, FAST)
    assert report["cascades"] == 60
    for window, scores in report["windows"].items():
        assert set(scores) == set(PREDICTORS)
        n = {s["n"] for s in scores.values()}
        expected = sum(int((c.times < int(window)).sum()) >= FAST.min_cascade_size for c in d.cascades)
        assert n == {expected}
        for name, s in scores.items():
            assert s["seconds"] >= 0
            # null only where at least half the forecasts are infinite (JSON has no infinity)
            assert (s["median_are"] is None) == (2 * s["n_infinite"] >= s["n"])
            if name != "seismic":
                assert s["median_are"] >= 0 and s["n_infinite"] == 0
        assert scores["hawkes+rf"]["n_infinite"] == 0 and scores["hawkes+rf"]["mean_are"] is not None
        # "observed" never overshoots: its ARE is 1 - n_obs / N < 1
        assert scores["observed"]["mean_are"] < 1


def test_seeds_give_the_mean_and_spread_of_the_single_seed_runs_and_per_cascade_lines(small_sim, tmp_path):
    d = load_dataset(small_sim)
    s = replace(FAST, windows=(1200,))
    one = [backtest(d, s, seeds=[seed])["windows"]["1200"] for seed in (0, 1)]
    with open(tmp_path / "pc.jsonl", "wb") as f:
        both = backtest(d, s, seeds=[0, 1], per_cascade=f)["windows"]["1200"]
    for name in ("hawkes+rf", "constant", "observed"):
        values = [o[name]["median_are"] for o in one]
        assert both[name]["seeds"] == 2
        assert both[name]["median_are"] == pytest.approx(np.mean(values))
        assert both[name]["sd"]["median_are"] == pytest.approx(np.std(values))
    assert both["observed"]["sd"]["median_are"] == 0  # no seed in it
    assert one[0]["hawkes+rf"]["median_are"] != one[1]["hawkes+rf"]["median_are"]  # the seed moves folds and forests
    assert both["constant"]["spearman"] is None and both["hawkes+rf"]["spearman"] is not None
    rows = [json.loads(line) for line in (tmp_path / "pc.jsonl").read_text().splitlines()]
    n = both["observed"]["n"]
    assert len(rows) == 2 * n and {r["seed"] for r in rows} == {0, 1}
    for seed in (0, 1):
        mine = [r for r in rows if r["seed"] == seed]
        errors = [abs(r["forecasts"]["hawkes+rf"] - r["n_true"]) / r["n_true"] for r in mine]
        assert np.median(errors) == pytest.approx(one[seed]["hawkes+rf"]["median_are"])
        assert all(r["forecasts"]["observed"] == r["n_obs"] for r in mine)


def test_constant_is_the_best_size_of_the_training_folds_only(small_sim):
    d = load_dataset(small_sim)
    fits = fit_window(d.cascades, 1200, FAST)
    folds = splits(fits, FAST)
    const = constant_forecasts(fits, folds)
    for train, test in folds:
        assert np.all(const[test] == best_constant(fits.n_true[train]))


def test_time_split_trains_on_earlier_cascades_only(small_sim):
    d = load_dataset(small_sim)
    fits = fit_window(d.cascades, 1200, FAST)
    starts = np.random.default_rng(0).permutation(fits.index.size).astype(float)
    folds = splits(fits, FAST, "time", starts)
    assert len(folds) == FAST.cv_folds
    tested = np.concatenate([test for _, test in folds])
    assert len(set(tested)) == tested.size < fits.index.size  # the earliest block is never tested
    for train, test in folds:
        assert starts[train].max() < starts[test].min()
    with pytest.raises(ValueError, match="start times"):
        splits(fits, FAST, "time", np.zeros(fits.index.size))


def test_oracle_only_with_truth(small_sim, tmp_path):
    d = load_dataset(small_sim)
    write_jsonl(tmp_path / "c.jsonl", d.cascades)
    report = backtest(load_dataset(tmp_path / "c.jsonl"), FAST)
    assert all("oracle" not in s for s in report["windows"].values())


def test_forest_never_predicts_a_cascade_it_was_trained_on(small_sim):
    """In-sample, fully grown trees reproduce omega almost exactly; cross-validated forecasts cannot."""
    d = load_dataset(small_sim)
    fits = fit_window(d.cascades, 1200, FAST)
    cv = cross_validated_forecasts(fits, FAST)
    forest = fit_forest(fits.X, fits.n_true, candidates=(("are", 1, "regression"),), n_estimators=20)
    insample = fits.n_obs + predict_omega(forest, fits.X) * fits.G1 / (1 - fits.n_star)
    are_cv = np.abs(cv - fits.n_true) / fits.n_true
    are_in = np.abs(insample - fits.n_true) / fits.n_true
    assert np.median(are_in) < 0.5 * np.median(are_cv)


def test_the_backtest_and_the_learner_select_and_fit_the_correction_alike(small_sim):
    """One code path: the backtest's forecasts of a fold equal those of the model the pipeline's
    learner trains on the same samples (its skops file, loaded back; and the model object that a
    predictor in the learner's process takes instead of the file predicts the same)."""
    d = load_dataset(small_sim)
    fits = fit_window(d.cascades, 1200, FAST)
    folds = splits(fits, FAST)
    cv = cross_validated_forecasts(fits, FAST, folds=folds)
    train, test = folds[0]
    data, choice, made = train_model(fits.X[train], fits.n_true[train], FAST.forest_trees, FAST.seed,
                                     mark_law=FAST.mark_law)
    model = load_model(data)
    assert (model.loss, model.min_samples_leaf, model.trend) == choice
    learnt = forecast_size(fits.n_obs[test], fits.G1[test], fits.n_star[test], predict_omega(model, fits.X[test]))
    np.testing.assert_allclose(cv[test], learnt, rtol=1e-12)
    np.testing.assert_array_equal(predict_omega(made, fits.X), predict_omega(model, fits.X))


def run_cli(*args):
    env = {**os.environ, "TWEETOSCOPE_FOREST_TREES": "20"}  # small forests: these tests check outputs, not accuracy
    return subprocess.run([sys.executable, "-m", "tweetoscope", *args], capture_output=True, text=True, cwd=ROOT, env=env)


def test_cli_json_is_exactly_one_object(small_sim):
    r = run_cli("backtest", str(small_sim), "--windows", "600,1200", "--folds", "3", "--json", "--no-progress")
    assert r.returncode == 0, r.stderr
    obj = json.loads(r.stdout)  # the whole of stdout is one JSON object
    assert set(obj) >= {"data", "cascades", "windows"} and isinstance(obj["data"], str)
    assert list(obj["windows"]) == ["600", "1200"]
    s = obj["windows"]["600"]["hawkes+rf"]
    assert set(s) >= {"median_are", "mean_are", "n", "seconds"}
    assert isinstance(s["n"], int) and isinstance(s["median_are"], float)


def test_cli_table_and_progress_bar(small_sim):
    r = run_cli("backtest", str(small_sim), "--windows", "600", "--folds", "3")
    assert r.returncode == 0, r.stderr
    for name in PREDICTORS:
        assert name in r.stdout
    assert "T_obs = 600 s" in r.stdout
    assert "backtest" in r.stderr  # the progress bar writes on stderr


@pytest.mark.parametrize("law", sorted(SIMULATION_LAWS))
def test_simulate_draws_from_the_named_law(law, tmp_path):
    """Each named law gives its marks' Pareto constants and n* = p E[m] < 0.99; --help names every law."""
    spec = SIMULATION_LAWS[law]
    assert main(["simulate", str(tmp_path), "--n", "40", "--seed", "3", "--law", law]) == 0
    d = load_dataset(tmp_path)
    assert {(t["alpha"], t["mu"]) for t in d.truth} == {(spec.alpha, spec.mu)}
    p = np.array([t["p"] for t in d.truth])
    assert np.all(p * pareto_mean(spec.alpha, spec.mu) < 0.99)
    assert law in re.sub(r"-\s+", "-", run_cli("simulate", "--help").stdout)  # argparse wraps at hyphens


@pytest.mark.parametrize(
    "args, message",
    [
        (["backtest", "/nonexistent/path"], "no such file or folder"),
        (["run", "--data", "/nonexistent/path", "--no-dashboard"], "no such file or folder"),
        (["backtest", "data/sample", "--windows", "abc"], "windows must be comma-separated"),
        (["backtest", "data/sample", "--alpha", "1.5"], "alpha must be > 2"),
        (["backtest", "data/sample", "--seeds", "0,x"], "seeds must be comma-separated integers"),
        (["backtest", "data/sample", "--windows", "600", "--split", "time"], "needs the cascades' start times"),
        (["simulate", "/tmp/x", "--n", "0"], "--n must be >= 1"),
        (["simulate", "/tmp/x", "--law", "flat"], "--law must be one of course, wide-beta"),
    ],
)
def test_cli_errors_are_clear(args, message, capsys, monkeypatch):
    """In this process (the same ``main`` as ``python -m tweetoscope``, which exits with what it returns;
    tests/test_config.py runs one bad invocation as a process): exit 2, the message, no traceback."""
    monkeypatch.chdir(ROOT)
    try:
        code = main(args)
    except SystemExit as exc:  # argparse's own errors exit 2 from inside parse_args
        code = exc.code
    assert code == 2
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err
