"""One frozen settings object: precedence flag > environment > file > default, clear errors."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tweetoscope.config import ENV_VARS, ConfigError, Settings, load_settings


def test_defaults_and_frozen():
    s = load_settings(env={})
    assert s == Settings()
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.kernel = "powerlaw"  # type: ignore[misc]


def test_precedence(tmp_path):
    f = tmp_path / "t.toml"
    f.write_text('[tweetoscope]\nwindows = [300, 900]\nalpha = 2.2\nkernel = "powerlaw"\n')
    env = {ENV_VARS["alpha"]: "2.6", ENV_VARS["seed"]: "7"}
    s = load_settings({"seed": 9, "mu": None}, env=env, config_file=f)
    assert s.windows == (300, 900)  # file
    assert s.kernel == "powerlaw"  # file
    assert s.alpha == 2.6  # env beats file
    assert s.seed == 9  # flag beats env
    assert s.mu == 10.0  # flag not given: default


def test_env_windows_and_config_file_from_env(tmp_path):
    f = tmp_path / "t.toml"
    f.write_text("min_cascade_size = 5\n")
    s = load_settings(env={ENV_VARS["windows"]: "600, 1200", "TWEETOSCOPE_CONFIG": str(f)})
    assert s.windows == (600, 1200) and s.min_cascade_size == 5


@pytest.mark.parametrize(
    "overrides, env, match",
    [
        ({"windows": "600,abc"}, {}, "windows"),
        ({}, {ENV_VARS["alpha"]: "two"}, "TWEETOSCOPE_ALPHA"),
        ({"alpha": 1.5}, {}, "alpha must be > 2"),
        ({"windows": (1200, 600)}, {}, "increasing"),
        ({"kernel": "gauss"}, {}, "kernel"),
        ({"worker_nice": 20}, {}, "worker_nice must be within 0 and 19"),
        ({}, {ENV_VARS["worker_nice"]: "-1"}, "worker_nice must be within 0 and 19"),
        ({"marks": "lognormal"}, {}, "marks must be .pareto. or .learnt."),
        ({"nope": 1}, {}, "unknown setting"),
        ({"max_n_star": 1.5}, {}, "max_n_star"),
    ],
)
def test_errors_name_the_setting(overrides, env, match):
    with pytest.raises(ConfigError, match=match):
        load_settings(overrides, env=env)


def test_bad_config_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(env={}, config_file=tmp_path / "missing.toml")
    f = tmp_path / "bad.toml"
    f.write_text("typo_setting = 3\n")
    with pytest.raises(ConfigError, match="unknown setting 'typo_setting'"):
        load_settings(env={}, config_file=f)


def test_secret_is_masked():
    s = Settings(kafka_secret="hunter2")
    assert "hunter2" not in repr(s)
    assert s.as_dict()["kafka_secret"] == "***"


def test_a_bad_log_level_is_a_clear_error():
    env = {**os.environ, "TWEETOSCOPE_LOG_LEVEL": "LOUD"}
    r = subprocess.run([sys.executable, "-m", "tweetoscope", "generate", "data/sample", "--kafka", "127.0.0.1:1"],
                       capture_output=True, text=True, env=env, cwd=Path(__file__).resolve().parents[1], timeout=60)
    assert r.returncode != 0
    assert "TWEETOSCOPE_LOG_LEVEL='LOUD' is not a log level" in r.stderr


def test_an_error_without_text_is_named_by_its_type(monkeypatch, capsys):
    """MOCK (named as such): a command made to raise a bare ``TimeoutError``, as distributed's
    handshake does under load, which no input of ours makes a command raise on purpose."""
    from tweetoscope import cli

    def bare_timeout(args):
        raise TimeoutError()

    monkeypatch.setattr(cli, "cmd_backtest", bare_timeout)
    assert cli.main(["backtest", "data/sample"]) == 2
    assert capsys.readouterr().err.strip() == "tweetoscope backtest: error: TimeoutError"
