"""What the dashboard knows of the pipeline, built from the messages its feed brings (bounded)."""

from __future__ import annotations

import time
from collections import OrderedDict, defaultdict, deque
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["DashboardState", "Health"]


@dataclass
class Health:
    """Pipeline health as last measured: ``events_per_s`` in, ``lag`` per topic (None: embedded run),
    Dask ``workers``, ``in_flight`` fit tasks, ``dask_link`` (the Dask dashboard's URL)."""

    events_per_s: float = 0.0
    events_total: int = 0
    lag: dict[str, int] | None = None
    workers: int | None = None
    in_flight: int | None = None
    dask_link: str | None = None


class DashboardState:
    """Latest forecast per (cascade, window), alerts, errors per window, series for the inspector.

    Every collection is bounded (``capacity`` forecasts, ``series_capacity`` cascades'
    series, ``history`` alerts and stats per window), so a long-running dashboard keeps
    a flat memory.
    """

    def __init__(self, *, capacity: int = 50_000, series_capacity: int = 5_000, history: int = 10_000):
        self.capacity, self.series_capacity = capacity, series_capacity
        self.forecasts: OrderedDict[tuple[str, int], Any] = OrderedDict()
        self.windows_of: defaultdict[str, set[int]] = defaultdict(set)  # cid -> windows in ``forecasts``
        self._ranked: tuple[int, list[Any]] = (-1, [])  # (version, forecasts largest first)
        self.alerted: set[tuple[str, int]] = set()
        self.alerts: deque = deque(maxlen=500)  # (wall time, Alert), newest last
        self.stats: dict[int, deque] = defaultdict(lambda: deque(maxlen=history))  # T_obs -> (wall time, ARE)
        # T_obs -> (forecast, true size) of the cascades whose size is known
        self.outcomes: dict[int, deque] = defaultdict(lambda: deque(maxlen=history))
        self.stats_seen: defaultdict[int, int] = defaultdict(int)  # T_obs -> stats ingested so far
        self.outcomes_seen: defaultdict[int, int] = defaultdict(int)  # T_obs -> outcomes ingested so far
        self.true_size: OrderedDict[str, int] = OrderedDict()
        self.series: OrderedDict[str, tuple[int, np.ndarray, str]] = OrderedDict()  # cid -> (T_obs, times, msg)
        self.models: dict[int, tuple[int, float]] = {}  # T_obs -> (version, wall time)
        self.samples: dict[int, list] = defaultdict(lambda: [0, 0.0])  # T_obs -> [count, last wall time]
        self.health = Health()
        self._events: deque = deque(maxlen=30)  # (wall time, total events)
        self.version = 0  # bumped on every ingest that changed something

    def ingest(self, messages: list[tuple[str, Any]], tweets: int = 0, lag: dict[str, int] | None = None,
               now: float | None = None, dask: dict[str, Any] | None = None) -> None:
        """Take what a feed's poll brought (wall time ``now``, default the clock's) and, if given, what the
        Dask cluster said (``workers``, ``in_flight``, ``link``)."""
        now = time.time() if now is None else now
        for topic, m in messages:
            if topic == "forecasts":
                key = (m.cid, m.T_obs)
                self.forecasts[key] = m
                self.forecasts.move_to_end(key)
                self.windows_of[m.cid].add(m.T_obs)
                if len(self.forecasts) > self.capacity:
                    old, _ = self.forecasts.popitem(last=False)
                    self.alerted.discard(old)
                    self.windows_of[old[0]].discard(old[1])
                    if not self.windows_of[old[0]]:
                        del self.windows_of[old[0]]
            elif topic == "alerts":
                key = (m.cid, m.T_obs)
                if key not in self.alerted:  # idempotent on (cid, T_obs)
                    self.alerted.add(key)
                    self.alerts.append((now, m))
            elif topic == "stats":
                self.stats[m.T_obs].append((now, m.ARE))
                self.stats_seen[m.T_obs] += 1
                if m.n_hat is not None and m.n_tot is not None:
                    self.outcomes[m.T_obs].append((m.n_hat, m.n_tot))
                    self.outcomes_seen[m.T_obs] += 1
                if m.n_tot is not None:
                    self.true_size[m.cid] = m.n_tot
                    if len(self.true_size) > self.series_capacity:
                        self.true_size.popitem(last=False)
            elif topic == "samples":
                entry = self.samples[m.T_obs if m.T_obs is not None else 0]
                entry[0] += 1
                entry[1] = now
            elif topic == "cascade_series" and not m.final:  # final series (whole cascades) feed the prior only
                held = self.series.get(m.cid)
                if held is None or held[0] < m.T_obs:
                    self.series[m.cid] = (m.T_obs, np.array([t for t, _ in m.tweets]), m.msg)
                    self.series.move_to_end(m.cid)
                    if len(self.series) > self.series_capacity:
                        self.series.popitem(last=False)
            elif topic == "models":
                T_obs, version = m
                if version >= self.models.get(T_obs, (-1, 0.0))[0]:
                    self.models[T_obs] = (version, now)
        self._events.append((now, self.health.events_total + tweets))
        self.health.events_total += tweets
        (t0, n0), (t1, n1) = self._events[0], self._events[-1]
        self.health.events_per_s = (n1 - n0) / (t1 - t0) if t1 > t0 else 0.0
        if lag is not None:
            self.health.lag = dict(lag)
        if dask is not None:
            self.health.workers = dask.get("workers")
            self.health.in_flight = dask.get("in_flight")
            self.health.dask_link = dask.get("link")
        if messages or tweets:
            self.version += 1

    def news(self, series: dict[int, deque], seen: dict[int, int], window: int, done: int, context: int = 0) -> list:
        """The entries of ``series[window]`` ingested after the first ``done`` (``seen[window]`` in all),
        with up to ``context`` entries before them; as many as the bounded series still holds."""
        new = seen.get(window, 0) - done
        if new <= 0:
            return []
        held = series.get(window, ())
        return list(held)[-min(len(held), new + context):]

    def top(self, k: int) -> list[Any]:
        """The ``k`` largest forecasts (latest per (cascade, window)); infinite ones first.

        The ranking is sorted once per change of the state, however many panels and sessions ask.
        """
        if self._ranked[0] != self.version:
            items = sorted(self.forecasts.values(), key=lambda f: -np.inf if f.n_tot is None else -f.n_tot)
            self._ranked = (self.version, items)
        return self._ranked[1][:k]

    def cascade(self, cid: str) -> dict[str, Any]:
        """What is known of one cascade: observed times, forecasts per window, true size."""
        held = self.series.get(cid)
        forecasts = [self.forecasts[(cid, w)] for w in sorted(self.windows_of.get(cid, ()))]
        return {"times": held[1] if held else np.empty(0), "msg": held[2] if held else "",
                "forecasts": forecasts, "true_size": self.true_size.get(cid)}
