"""The dashboard's panels: one component per panel, each owning its ``ColumnDataSource`` (as the Dask
dashboard's components do). ``update()`` refreshes a panel's sources from a :class:`DashboardState`:
growing series through ``ColumnDataSource.stream`` with a rollover, whole tables only when they
changed. No panel does any I/O: the state is filled off the event loop by
:class:`tweetoscope.dashboard.Dashboard`."""

from __future__ import annotations

import time

import numpy as np
from bokeh.layouts import column, row
from bokeh.models import (ColumnDataSource, DataTable, DatetimeTickFormatter, Div, NumberFormatter, Select, Spinner,
                          TableColumn, Whisker)
from bokeh.palettes import Category10
from bokeh.plotting import figure

from estimators import remaining_size_sd

from .state import DashboardState

__all__ = ["TopK", "AlertFeed", "Accuracy", "Outcomes", "Inspector", "Health", "PANELS"]


def _set(source: ColumnDataSource, data: dict) -> None:
    """Replace a table's data only if it changed (a whole table is sent to the browser)."""
    if data != source.data:
        source.data = data


def _int() -> NumberFormatter:
    return NumberFormatter(format="0,0")  # a model belongs to one document: a new one per panel


def _finite(x: float | None) -> float:
    return float("nan") if x is None else float(x)


class TopK:
    """The K largest forecasts: cascade, message, window, events seen, forecast, model version, alert."""

    name = "topk"

    def __init__(self, state: DashboardState, k: int = 20):
        self.state = state
        self.source = ColumnDataSource(
            {c: [] for c in ("cid", "msg", "T_obs", "n_obs", "forecast", "model_version", "alert")}, name="topk-source")
        self.k = Spinner(title="K", low=1, high=500, step=5, value=k, width=80, name="topk-k")
        self.k.on_change("value", lambda attr, old, new: self.update())
        cols = [TableColumn(field="cid", title="cascade"), TableColumn(field="msg", title="message"),
                TableColumn(field="T_obs", title="window (s)"), TableColumn(field="n_obs", title="events seen"),
                TableColumn(field="forecast", title="forecast size", formatter=_int()),
                TableColumn(field="model_version", title="model"), TableColumn(field="alert", title="alert")]
        table = DataTable(source=self.source, columns=cols, sortable=True, height=380, sizing_mode="stretch_width",
                          index_position=None)
        self.layout = column(Div(text="<h3>Top-K forecasts</h3>"), self.k, table, sizing_mode="stretch_width",
                             name="panel-topk")

    def update(self) -> None:
        top = self.state.top(int(self.k.value or 20))
        _set(self.source, {
            "cid": [f.cid for f in top], "msg": [f.msg[:80] for f in top], "T_obs": [f.T_obs for f in top],
            "n_obs": [f.n_obs for f in top], "forecast": [_finite(f.n_tot) for f in top],
            "model_version": [f.model_version for f in top],
            "alert": ["yes" if (f.cid, f.T_obs) in self.state.alerted else "" for f in top],
        })


class AlertFeed:
    """Alerts, newest first."""

    name = "alerts"

    def __init__(self, state: DashboardState, rows: int = 100):
        self.state, self.rows = state, rows
        self.source = ColumnDataSource({c: [] for c in ("time", "cid", "T_obs", "forecast", "model_version", "msg")},
                                       name="alerts-source")
        cols = [TableColumn(field="time", title="received"), TableColumn(field="cid", title="cascade"),
                TableColumn(field="T_obs", title="window (s)"),
                TableColumn(field="forecast", title="forecast size", formatter=_int()),
                TableColumn(field="model_version", title="model"), TableColumn(field="msg", title="message")]
        table = DataTable(source=self.source, columns=cols, height=380, sizing_mode="stretch_width",
                          index_position=None)
        self.layout = column(Div(text="<h3>Alert feed</h3>"), table, sizing_mode="stretch_width", name="panel-alerts")

    def update(self) -> None:
        latest = list(self.state.alerts)[-self.rows:][::-1]
        _set(self.source, {
            "time": [time.strftime("%H:%M:%S", time.localtime(t)) for t, _ in latest],
            "cid": [a.cid for _, a in latest], "T_obs": [a.T_obs for _, a in latest],
            "forecast": [a.n_tot for _, a in latest], "model_version": [a.model_version for _, a in latest],
            "msg": [a.msg[:80] for _, a in latest],
        })


def _clock() -> DatetimeTickFormatter:
    """Wall-clock labels at every zoom level of a datetime axis (a fast replay spans seconds: Bokeh's
    defaults would label it in milliseconds). A new one per panel: a model belongs to one document."""
    return DatetimeTickFormatter(microseconds="%H:%M:%S", milliseconds="%H:%M:%S", seconds="%H:%M:%S",
                                 minsec="%H:%M:%S", minutes="%H:%M", hourmin="%H:%M", hours="%H:%M", days="%d %b")


class Accuracy:
    """ARE per window: its rolling median over wall-clock time (at each stat's arrival, the median of the
    last ``rolling`` stats, fewer at the start; streamed, the last ``points`` kept), and its histogram."""

    name = "accuracy"

    def __init__(self, state: DashboardState, windows: tuple[int, ...], rolling: int = 50, bins: int = 30,
                 points: int = 5000):
        self.state, self.windows, self.rolling, self.points = state, windows, rolling, points
        self._done = dict.fromkeys(windows, 0)  # stats of each window already drawn
        self.edges = np.linspace(0.0, 2.0, bins + 1)  # ARE above 2 lands in the last bin
        colors = Category10[10]
        self.lines = figure(height=260, sizing_mode="stretch_width", title=f"rolling median ARE (last {rolling})",
                            x_axis_type="datetime", x_axis_label="time the true size arrived",
                            y_axis_label="median ARE", name="accuracy-lines")
        self.lines.xaxis.formatter = _clock()
        self.hist = figure(height=260, sizing_mode="stretch_width", title="ARE histogram",
                           x_axis_label="ARE (last bin: >= 2)", y_axis_label="cascades", name="accuracy-hist")
        self.sources: dict[int, tuple[ColumnDataSource, ColumnDataSource]] = {}
        for i, w in enumerate(windows):
            line = ColumnDataSource({"time": [], "median": []}, name=f"accuracy-line-{w}")
            hist = ColumnDataSource({"left": [], "right": [], "count": []}, name=f"accuracy-hist-{w}")
            color = colors[i % 10]
            self.lines.line("time", "median", source=line, color=color, legend_label=f"{w} s", line_width=2)
            self.hist.quad(left="left", right="right", bottom=0, top="count", source=hist, color=color, alpha=0.35,
                           legend_label=f"{w} s")
            self.sources[w] = (line, hist)
        self.lines.legend.location = "top_right"
        self.hist.legend.location = "top_right"
        self.layout = column(Div(text="<h3>Accuracy</h3>"), row(self.lines, self.hist, sizing_mode="stretch_width"),
                             sizing_mode="stretch_width", name="panel-accuracy")

    def update(self) -> None:
        st = self.state
        for w, (line, hist) in self.sources.items():
            seen = st.stats_seen.get(w, 0)
            if seen == self._done[w]:
                continue
            rows = st.news(st.stats, st.stats_seen, w, self._done[w], context=self.rolling - 1)
            new = min(seen - self._done[w], len(rows))
            are = np.array([a for _, a in rows], dtype=float)
            ends = range(len(rows) - new, len(rows))
            medians = [float(np.median(are[max(0, j - self.rolling + 1):j + 1])) for j in ends]
            arrived = [rows[j][0] * 1000.0 for j in ends]  # ms since the epoch
            line.stream({"time": arrived, "median": medians}, rollover=self.points)
            self._done[w] = seen
            every = np.array([a for _, a in st.stats[w]], dtype=float)
            counts, _ = np.histogram(np.minimum(every, self.edges[-1] - 1e-9), bins=self.edges)
            hist.data = {"left": self.edges[:-1], "right": self.edges[1:], "count": counts}


class Outcomes:
    """Forecast against true size (log-log), per window, for the cascades whose size is known; the
    diagonal is the exact forecast. Streamed, the last ``points`` per window kept."""

    name = "outcomes"

    def __init__(self, state: DashboardState, windows: tuple[int, ...], points: int = 2000):
        self.state, self.points = state, points
        self._done = dict.fromkeys(windows, 0)
        self._range = (np.inf, 0.0)
        colors = Category10[10]
        self.plot = figure(height=260, sizing_mode="stretch_width", title="forecast against true size",
                           x_axis_type="log", y_axis_type="log", x_axis_label="forecast size",
                           y_axis_label="true size", name="outcomes-plot")
        self.diagonal = ColumnDataSource({"x": [], "y": []}, name="outcomes-diagonal")
        self.plot.line("x", "y", source=self.diagonal, color="gray", line_dash="dashed")
        self.sources: dict[int, ColumnDataSource] = {}
        for i, w in enumerate(windows):
            src = ColumnDataSource({"forecast": [], "true": []}, name=f"outcomes-{w}")
            self.plot.scatter("forecast", "true", source=src, size=5, alpha=0.5, color=colors[i % 10],
                              legend_label=f"{w} s")
            self.sources[w] = src
        self.plot.legend.location = "top_left"
        self.layout = column(Div(text="<h3>Forecasts and outcomes</h3>"), self.plot, sizing_mode="stretch_width",
                             name="panel-outcomes")

    def update(self) -> None:
        st = self.state
        lo, hi = self._range
        for w, src in self.sources.items():
            seen = st.outcomes_seen.get(w, 0)
            rows = [(f, n) for f, n in st.news(st.outcomes, st.outcomes_seen, w, self._done[w]) if f > 0]
            self._done[w] = seen
            if rows:
                src.stream({"forecast": [f for f, _ in rows], "true": [n for _, n in rows]}, rollover=self.points)
                lo = min(lo, *(min(f, n) for f, n in rows))
                hi = max(hi, *(max(f, n) for f, n in rows))
        if (lo, hi) != self._range and hi > 0:
            self._range = (lo, hi)
            self.diagonal.data = {"x": [lo, hi], "y": [lo, hi]}


class Inspector:
    """One cascade: its observed cumulative count, the forecast at each window with a +-1 sd band
    (the Hawkes remaining-size sd, a lower bound), and its true size once known."""

    name = "inspector"

    def __init__(self, state: DashboardState):
        self.state = state
        self.select = Select(title="cascade (largest forecasts first)", options=[], width=320, name="inspector-select")
        self.select.on_change("value", lambda attr, old, new: self.update())
        self._shown: tuple[str, int] | None = None  # (cascade, state version) drawn
        self.observed = ColumnDataSource({"t": [], "count": []}, name="inspector-observed")
        self.forecast = ColumnDataSource({"T_obs": [], "forecast": [], "lower": [], "upper": []},
                                         name="inspector-forecast")
        self.truth = ColumnDataSource({"t": [], "size": []}, name="inspector-truth")
        self.title = Div(text="", name="inspector-title")
        p = figure(height=300, sizing_mode="stretch_width", x_axis_label="seconds since the post",
                   y_axis_label="events", name="inspector-plot")
        p.step("t", "count", source=self.observed, mode="after", line_width=2, legend_label="observed")
        p.scatter("T_obs", "forecast", source=self.forecast, size=9, color="firebrick", legend_label="forecast")
        p.add_layout(Whisker(source=self.forecast, base="T_obs", lower="lower", upper="upper",
                             line_color="firebrick"))
        p.line("t", "size", source=self.truth, line_dash="dashed", color="black", legend_label="true size")
        p.legend.location = "top_left"
        self.plot = p
        self.layout = column(Div(text="<h3>Cascade inspector</h3>"), self.select, self.title, p,
                             sizing_mode="stretch_width", name="panel-inspector")

    def update(self) -> None:
        options = [f.cid for f in self.state.top(200)]
        options = list(dict.fromkeys(options))
        if options != self.select.options:
            self.select.options = options
        if not self.select.value and options:
            self.select.value = options[0]  # triggers update() again through on_change
            return
        cid = self.select.value
        if not cid or self._shown == (cid, self.state.version):
            return
        self._shown = (cid, self.state.version)
        info = self.state.cascade(cid)
        times = np.sort(info["times"])
        self.observed.data = {"t": times, "count": np.arange(1, times.size + 1)}
        fs = info["forecasts"]
        finite = [f for f in fs if f.n_tot is not None]
        sd = [remaining_size_sd(f.G1, f.n_star) for f in finite]
        self.forecast.data = {"T_obs": [f.T_obs for f in finite], "forecast": [f.n_tot for f in finite],
                              "lower": [max(f.n_obs, f.n_tot - s) for f, s in zip(finite, sd)],
                              "upper": [f.n_tot + s for f, s in zip(finite, sd)]}
        true = info["true_size"]
        right = max([*(f.T_obs for f in fs), float(times[-1]) if times.size else 0.0, 1.0])
        self.truth.data = {"t": [0.0, right], "size": [true, true]} if true is not None else {"t": [], "size": []}
        self.title.text = f"<b>{cid}</b> {info['msg'][:100]}" + (f" — true size {true:,}" if true else "")


class Health:
    """Events/s in, consumer lag per topic, Dask workers and fits in flight, model versions, samples."""

    name = "health"

    def __init__(self, state: DashboardState):
        self.state = state
        self.source = ColumnDataSource({"what": [], "value": []}, name="health-source")
        cols = [TableColumn(field="what", title="measure"), TableColumn(field="value", title="value")]
        self.link = Div(text="", name="health-dask-link")
        table = DataTable(source=self.source, columns=cols, height=300, sizing_mode="stretch_width",
                          index_position=None)
        self.layout = column(Div(text="<h3>Pipeline health</h3>"), table, self.link, sizing_mode="stretch_width",
                             name="panel-health")

    def update(self) -> None:
        h, now = self.state.health, time.time()
        rows = [("events/s in", f"{h.events_per_s:,.0f}"), ("events seen", f"{h.events_total:,}")]
        if h.lag is None:
            rows.append(("consumer lag", "none: embedded run, stages wired in memory"))
        else:
            rows += [(f"lag {topic}", f"{n:,}") for topic, n in sorted(h.lag.items())]
        rows.append(("Dask workers", "unknown" if h.workers is None else str(h.workers)))
        rows.append(("fit tasks in flight", "unknown" if h.in_flight is None else str(h.in_flight)))
        for w, (version, at) in sorted(self.state.models.items()):
            rows.append((f"model {w} s", f"version {version}, {now - at:,.0f} s old"))
        for w, (count, at) in sorted(self.state.samples.items()):
            rows.append((f"samples {w} s", f"{count:,}, last {now - at:,.0f} s ago"))
        _set(self.source, {"what": [r[0] for r in rows], "value": [r[1] for r in rows]})
        link = f'<a href="{h.dask_link}" target="_blank">Dask dashboard</a>' if h.dask_link else "Dask dashboard: unknown"
        if self.link.text != link:
            self.link.text = link


PANELS = (TopK, AlertFeed, Accuracy, Outcomes, Inspector, Health)
