"""Readable terminal tables (rich) for command outputs."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import msgspec
import numpy as np
from rich.console import Console
from rich.table import Table

__all__ = ["print_accuracy", "print_backtest", "print_run"]


def _fmt(x: float | None, digits: int = 3) -> str:
    if x is None:
        return "inf"
    return f"{x:,.{digits}f}"


def print_backtest(report: dict, console: Console | None = None) -> None:
    """Print one table per window: predictor, median ARE, mean ARE, cascades, seconds."""
    console = console or Console()
    console.print(f"[bold]{report['data']}[/bold]: {report['cascades']} cascades, kernel {report['kernel']}")
    for window, scores in report["windows"].items():
        table = Table(title=f"T_obs = {window} s", title_justify="left")
        for col, justify in (("predictor", "left"), ("median ARE", "right"), ("mean ARE", "right"),
                             ("MSLE (log2)", "right"), ("n", "right"), ("seconds", "right")):
            table.add_column(col, justify=justify)
        if not scores:
            console.print(f"T_obs = {window} s: no cascade has enough events")
            continue
        best = min((s["median_are"] for s in scores.values() if s["median_are"] is not None), default=None)
        for name, s in scores.items():
            med = _fmt(s["median_are"])
            if s["median_are"] == best:
                med = f"[bold green]{med}[/bold green]"
            mean = _fmt(s["mean_are"]) + (f" ({s['n_infinite']} inf)" if s["n_infinite"] else "")
            table.add_row(name, med, mean, _fmt(s["msle_log2"], 2), str(s["n"]), f"{s['seconds']:.2f}")
        if any(s["n_infinite"] for s in scores.values()):
            table.caption = "inf: supercritical forecasts (infinite final size)"
        console.print(table)


def print_run(summary, console: Console | None = None) -> None:
    """Records written per topic by an embedded run, its speed, and where the files are."""
    console = console or Console()
    table = Table(title=f"{summary.events:,} events replayed in {summary.seconds:.1f} s "
                        f"({summary.events / max(summary.seconds, 1e-9):,.0f} events/s)", title_justify="left")
    table.add_column("topic")
    table.add_column("records", justify="right")
    table.add_column("file")
    for topic, n in sorted(summary.counts.items()):
        table.add_row(topic, f"{n:,}", f"{summary.out_dir}/{topic}.jsonl")
    console.print(table)
    stats = Path(summary.out_dir) / "stats.jsonl"
    if stats.exists():
        print_accuracy(stats, console)


def print_accuracy(stats_path: Path, console: Console | None = None) -> None:
    """Per window: how many stats, median and mean ARE, model versions used (from a ``stats.jsonl``)."""
    from streams.memory import read_jsonl_topic

    from .schemas import Stat

    console = console or Console()
    per_window: dict[int, list[Stat]] = defaultdict(list)
    for rec in read_jsonl_topic(stats_path):
        stat = msgspec.convert(rec["value"], Stat)
        per_window[stat.T_obs].append(stat)
    if not per_window:
        return
    table = Table(title="forecast accuracy (stats: the true size is known)", title_justify="left")
    for col in ("T_obs (s)", "cascades", "median ARE", "mean ARE", "model versions"):
        table.add_column(col, justify="right")
    for window in sorted(per_window):
        rows = per_window[window]
        are = np.array([r.ARE for r in rows])
        versions = sorted({r.model_version for r in rows})
        shown = ", ".join(map(str, versions)) if len(versions) <= 4 else f"{versions[0]}..{versions[-1]}"
        table.add_row(str(window), f"{len(rows):,}", _fmt(float(np.median(are))), _fmt(float(are.mean())), shown)
    console.print(table)
