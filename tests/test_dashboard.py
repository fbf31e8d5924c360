"""The dashboard: panels fed by hand, then the real page in headless Chromium beside a running pipeline."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from helpers import free_port, wait_until

from tweetoscope.dashboard import DashboardState, OutDirFeed
from tweetoscope.dashboard.panels import Accuracy, AlertFeed, Health, Inspector, Outcomes, TopK
from tweetoscope.schemas import Alert, Forecast, Serie, Stat

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
PANEL_SOURCES = ("topk-source", "alerts-source", "accuracy-line-600", "accuracy-hist-600", "outcomes-600",
                 "inspector-observed", "inspector-forecast", "health-source")

#: Elements matching a CSS selector anywhere in the page, inside Bokeh's shadow roots too.
DEEP_COUNT_JS = """
const found = [];
const walk = (root) => {
  root.querySelectorAll(arguments[0]).forEach((e) => found.push(e));
  root.querySelectorAll('*').forEach((e) => { if (e.shadowRoot) walk(e.shadowRoot); });
};
walk(document);
return found.filter((e) => e.offsetWidth > 0 && e.offsetHeight > 0).length;
"""


def forecast(cid, T, n, **kw):
    return Forecast(cid=cid, T_obs=T, n_tot=n, n_obs=kw.pop("n_obs", 5), n_star=kw.pop("n_star", 0.5),
                    G1=kw.pop("G1", 3.0), **kw)


def fed_state():
    s = DashboardState()
    msgs = [("forecasts", forecast(str(i), 600, float(10 * i), model_version=i % 3)) for i in range(1, 31)]
    msgs += [("forecasts", forecast("7", 600, 999.0, model_version=4))]  # a newer forecast of the same key wins
    msgs += [("forecasts", forecast("7", 1200, None))]  # supercritical
    msgs += [("alerts", Alert(cid="7", T_obs=600, n_tot=999.0)), ("alerts", Alert(cid="7", T_obs=600, n_tot=999.0)),
             ("alerts", Alert(cid="30", T_obs=600, n_tot=300.0))]
    msgs += [("stats", Stat(cid=str(i), T_obs=600, ARE=i / 20, n_hat=100 * (1 + i / 20), n_tot=100))
             for i in range(1, 31)]
    msgs += [("cascade_series", Serie(cid="7", T_obs=600, tweets=[(0.0, 10.0), (5.0, 3.0), (9.0, 1.0)])),
             ("cascade_series", Serie(cid="7", T_obs=300, tweets=[(0.0, 10.0)])),  # a shorter one: ignored
             ("models", (600, 40)), ("models", (600, 20))]
    s.ingest(msgs, tweets=100, now=1000.0)
    s.ingest([], tweets=50, now=1010.0)
    return s


def test_topk_sorted_bounded_and_marks_alerts():
    s = fed_state()
    p = TopK(s, k=5)
    p.update()
    d = p.source.data
    assert d["cid"] == ["7", "7", "30", "29", "28"]  # the infinite forecast first, then the largest
    assert np.isnan(d["forecast"][0]) and d["forecast"][1:] == [999.0, 300.0, 290.0, 280.0]
    assert d["model_version"][1] == 4 and d["alert"][:3] == ["", "yes", "yes"]
    p.k.value = 12
    assert len(p.source.data["cid"]) == 12


def test_alert_feed_newest_first_and_idempotent():
    p = AlertFeed(fed_state())
    p.update()
    assert p.source.data["cid"] == ["30", "7"]  # the duplicate alert of (7, 600) shown once


def test_accuracy_rolling_median_streamed_and_histogram():
    s = fed_state()
    p = Accuracy(s, (600, 1200), rolling=10)
    p.update()
    line, hist = p.sources[600]
    are = np.arange(1, 31) / 20
    assert line.data["median"][0] == pytest.approx(are[0])  # fewer than 10 stats yet: the median of those
    assert line.data["median"][9] == pytest.approx(np.median(are[:10]))
    assert line.data["median"][-1] == pytest.approx(np.median(are[-10:]))
    assert sum(hist.data["count"]) == 30
    assert len(line.data["time"]) == 30 and line.data["time"][-1] == 1000.0 * 1000  # at the last stat's arrival
    assert p.sources[1200][0].data["time"] == []  # no stat for that window yet
    p.update()
    assert len(line.data["time"]) == 30  # nothing new: nothing streamed
    s.ingest([("stats", Stat(cid="x", T_obs=600, ARE=2.5, n_tot=10))], now=1020.0)
    p.update()
    assert len(line.data["time"]) == 31 and line.data["median"][-1] == pytest.approx(np.median([*are[-9:], 2.5]))
    assert p.lines.xaxis[0].formatter.seconds == "%H:%M:%S"  # wall-clock labels, never milliseconds
    assert p.lines.xaxis[0].formatter.milliseconds == "%H:%M:%S"


def test_outcomes_scatter_forecast_against_truth_log_log():
    s = fed_state()
    p = Outcomes(s, (600, 1200), points=25)
    p.update()
    src = p.sources[600]
    assert len(src.data["forecast"]) == 25  # the rollover keeps the last 25
    assert src.data["forecast"][-1] == pytest.approx(250.0) and set(src.data["true"]) == {100}
    assert p.plot.x_scale.__class__.__name__ == "LogScale" and p.diagonal.data["x"] == [100, 250.0]


def test_one_failing_panel_leaves_the_others_drawn(monkeypatch, caplog):
    """MOCK (named as such): a panel made to raise, which no real input makes them do."""
    from bokeh.document import Document

    from tweetoscope.dashboard import Dashboard

    class Feed:
        source, status = "a fed state", None

        def close(self):
            pass

    d = Dashboard(Feed(), (600, 1200))
    d.state = fed_state()
    monkeypatch.setattr(TopK, "update", lambda self: 1 / 0)
    doc = Document()
    d.make_document(doc)
    assert "the topk panel failed: division by zero" in doc.get_model_by_name("status").text
    assert len(doc.get_model_by_name("alerts-source").data["cid"]) == 2  # the others drew
    assert any("topk panel failed" in r.message for r in caplog.records)
    d.close()


def test_memory_feed_reads_the_bus_it_is_served_beside():
    from streams.memory import MemoryBus
    from tweetoscope.dashboard import MemoryFeed
    from tweetoscope.schemas import ALERTS, TWEETS, Tweet

    bus = MemoryBus()
    feed = MemoryFeed(bus)
    bus.publish([ALERTS.record(Alert(cid="1", T_obs=600, n_tot=5.0)), TWEETS.record(Tweet(msg="hi", t=0.0, m=3.0, tweet_id=1),
                                                                                     key=b"s"),
                 ALERTS.record(Alert(cid="2", T_obs=600, n_tot=6.0))])
    got = feed.poll()
    assert [m.cid for _, m in got.messages] == ["1", "2"] and got.tweets == 1
    assert feed.poll().messages == [] and feed.poll().tweets == 0
    # the collector's series, made in process as arrays: the messages their records decode to
    from tweetoscope.batches import SeriesBatch
    from tweetoscope.schemas import CASCADE_SERIES, SerieArrays

    batch = SeriesBatch([SerieArrays("3", 600, np.array([0.0, 2.5]), np.array([10.0, 4.0]), "m", "s0", 1.5),
                         SerieArrays("4", 1200, np.array([0.0]), np.array([7.0]), final=True)])
    bus.publish(batch)
    got = feed.poll()
    assert [m for _, m in got.messages] == [CASCADE_SERIES.decode(r.value) for r in batch]
    assert [t for t, _ in got.messages] == ["cascade_series"] * 2


def test_inspector_shows_series_forecasts_band_and_truth():
    s = fed_state()
    p = Inspector(s)
    p.select.value = "7"
    p.update()
    assert list(p.observed.data["count"]) == [1, 2, 3]  # the longest series of the cascade
    f = p.forecast.data
    assert f["T_obs"] == [600] and f["forecast"] == [999.0]  # the supercritical one has no point
    sd = np.sqrt(3.0 / 0.5 ** 3)
    assert f["upper"][0] == pytest.approx(999.0 + sd) and f["lower"][0] == pytest.approx(999.0 - sd)
    assert p.truth.data["size"] == [100, 100]


def test_health_rates_models_samples():
    s = fed_state()
    p = Health(s)
    p.update()
    rows = dict(zip(p.source.data["what"], p.source.data["value"]))
    assert rows["events/s in"] == "5"  # 50 events in 10 s
    assert rows["model 600 s"].startswith("version 40")
    assert "embedded" in rows["consumer lag"]


def test_out_dir_feed_reads_only_complete_lines(tmp_path):
    feed = OutDirFeed(tmp_path / "missing")
    assert feed.poll().messages == [] and "No pipeline to read" in feed.status
    out = tmp_path / "out"
    out.mkdir()
    line = b'{"key":"600","value":{"type":"alert","cid":"1","T_obs":600,"n_tot":12.5}}\n'
    (out / "alerts.jsonl").write_bytes(line + line[:20])
    feed = OutDirFeed(out)
    got = feed.poll()
    assert feed.status is None and [m.cid for _, m in got.messages] == ["1"]
    with open(out / "alerts.jsonl", "ab") as fh:
        fh.write(line[20:])
    assert [m.n_tot for _, m in feed.poll().messages] == [12.5]  # the rest of the half-written line


# ----------------------------------------------------------------- the real page


def wait_http(url: str, proc: subprocess.Popen, timeout: float = 120.0) -> None:
    """Wait until ``url`` answers 200 (the server listens), failing at once if ``proc`` exited."""

    def answers() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"the process exited ({proc.returncode}): {proc.stderr.read()}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    wait_until(answers, timeout, f"{url} to answer", every=0.2)


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="module")
def running_pipeline(tmp_path_factory):
    """``tweetoscope run`` on the sample, paced (about 30 s), with its dashboard: yields the page's URL."""
    out = tmp_path_factory.mktemp("dash") / "out"
    port = free_port()
    cmd = [sys.executable, "-m", "tweetoscope", "run", "--data", str(ROOT / "data" / "sample"), "--out", str(out),
           "--speed", "4000", "--stagger", "600", "--learner-every", "20", "--learner-interval", "0",
           "--port", str(port)]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}/"
    try:
        wait_http(url, proc)
        yield url, proc
    finally:
        stop(proc)


@pytest.fixture(scope="module")
def browser():
    if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
        pytest.fail("Chromium is missing: run scripts/setup-browser.sh (make test does)", pytrace=False)
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1500,2000"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})  # the page's console, for the test
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


ROWS_JS = """
const doc = window.Bokeh && Bokeh.documents[0];
if (!doc) return null;
const out = {};
for (const name of arguments[0]) {
  const m = doc.get_model_by_name(name);
  out[name] = m ? Object.values(m.data)[0].length : -1;
}
const status = doc.get_model_by_name('status');
out.status = status ? status.text : null;
return out;
"""


def test_every_panel_renders_with_data_in_chromium(running_pipeline, browser, tmp_path):
    from selenium.webdriver.support.ui import WebDriverWait

    url, proc = running_pipeline
    browser.get(url)
    rows = WebDriverWait(browser, 120, poll_frequency=0.5).until(
        lambda d: (r := d.execute_script(ROWS_JS, PANEL_SOURCES)) and all(r[n] > 0 for n in PANEL_SOURCES) and r)
    assert proc.poll() is None, "the pipeline should still be running while the page shows it"
    assert rows["status"] == ""
    for name in ("panel-topk", "panel-alerts", "panel-accuracy", "panel-outcomes", "panel-inspector", "panel-health"):
        assert browser.execute_script(f"return Bokeh.documents[0].get_model_by_name('{name}') !== null")
    # the rendered page, not only the models: table rows and plot canvases laid out in the DOM
    WebDriverWait(browser, 30, poll_frequency=0.5).until(
        lambda d: d.execute_script(DEEP_COUNT_JS, ".slick-row") >= 10 and d.execute_script(DEEP_COUNT_JS, "canvas") >= 4)
    severe = [e for e in browser.get_log("browser") if e["level"] == "SEVERE" and "favicon.ico" not in e["message"]]
    assert severe == [], severe
    shot = tmp_path / "dashboard.png"
    browser.save_screenshot(str(shot))
    assert shot.stat().st_size > 10_000
    keep = ROOT / "out" / "screenshots"
    keep.mkdir(parents=True, exist_ok=True)
    shutil.copy(shot, keep / "dashboard.png")  # docs/dashboard.png is a reviewed copy of one of these


def test_pull_session_sees_the_panels(running_pipeline):
    from bokeh.client import pull_session

    url, _ = running_pipeline
    with pull_session(url=url) as session:
        doc = session.document
        assert doc.title == "Tweetoscope"
        assert len(doc.get_model_by_name("health-source").data["what"]) > 0
        assert doc.get_model_by_name("topk-k").value == 20


def test_dashboard_without_a_pipeline_says_so_and_shows_the_dask_cluster(tmp_path):
    from bokeh.client import pull_session
    from distributed import LocalCluster

    port = free_port()
    with LocalCluster(n_workers=1, threads_per_worker=1, dashboard_address=None) as cluster:
        proc = subprocess.Popen([sys.executable, "-m", "tweetoscope", "dashboard", "--out", str(tmp_path / "nothing"),
                                 "--port", str(port), "--scheduler", cluster.scheduler_address], cwd=ROOT,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            url = f"http://127.0.0.1:{port}/"
            wait_http(url, proc)

            def page() -> tuple[str, dict] | None:  # a new session renders the state the poller filled
                with pull_session(url=url) as session:
                    doc = session.document
                    text = doc.get_model_by_name("status").text
                    health = dict(zip(doc.get_model_by_name("health-source").data["what"],
                                      doc.get_model_by_name("health-source").data["value"]))
                return (text, health) if health.get("Dask workers") not in (None, "unknown") else None

            text, health = wait_until(page, 30, "the first poll of the feed and the cluster", every=0.3)
            assert "No pipeline to read" in text and "tweetoscope run" in text
            assert health["Dask workers"] == "1" and health["fit tasks in flight"] == "0"
        finally:
            stop(proc)
