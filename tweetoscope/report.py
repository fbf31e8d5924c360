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


def _with_sd(s: dict, name: str, digits: int = 3) -> str:
    value = s[name]
    if value is None:
        return "-" if name in ("spearman", "kendall", "top_decile") else "inf"
    sd = (s.get("sd") or {}).get(name)
    text = f"{value:,.{digits}f}"
    return f"{text}±{sd:.{digits}f}" if s.get("seeds", 1) > 1 and sd else text


def print_backtest(report: dict, console: Console | None = None) -> None:
    """Print one table per window: predictor, median and mean ARE, MSLE, rank correlations with the
    true sizes, top-decile share, cascades, seconds; ``± sd`` over seeds where there are several."""
    if console is None:
        console = Console()
        console.width = max(console.width, 132)  # nine columns; a pipe or a narrow terminal wraps them
    seeds = report.get("seeds", [0])
    console.print(f"[bold]{report['data']}[/bold]: {report['cascades']} cascades, kernel {report['kernel']}, "
                  f"split {report.get('split', 'kfold')}, seeds {','.join(map(str, seeds))}")
    for window, scores in report["windows"].items():
        if not scores:
            console.print(f"T_obs = {window} s: fewer than 2 cascades have enough events")
            continue
        table = Table(title=f"T_obs = {window} s", title_justify="left")
        for col in ("predictor", "median ARE", "mean ARE", "MSLE (log2)", "Spearman ρ", "Kendall τ", "top 10 %",
                    "n", "s"):
            table.add_column(col, justify="left" if col == "predictor" else "right")
        best = min((s["median_are"] for s in scores.values() if s["median_are"] is not None), default=None)
        for name, s in scores.items():
            med = _with_sd(s, "median_are")
            if s["median_are"] == best:
                med = f"[bold green]{med}[/bold green]"
            mean = _with_sd(s, "mean_are") + (f" ({s['n_infinite']:g} inf)" if s["n_infinite"] else "")
            table.add_row(name, med, mean, _with_sd(s, "msle_log2", 2), _with_sd(s, "spearman", 2),
                          _with_sd(s, "kendall", 2), _with_sd(s, "top_decile", 2), f"{s['n']:g}", f"{s['seconds']:.2f}")
        notes = []
        if any(s["n_infinite"] for s in scores.values()):
            notes.append("inf: supercritical forecasts (infinite final size)")
        notes.append("ρ, τ: rank correlations with the true size; top 10 %: share of the 10 % largest forecasts "
                     "among the 10 % largest sizes; -: a constant does not rank")
        table.caption = "; ".join(notes)
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
    from .schemas import Stat

    # a line of stats.jsonl (streams.memory.jsonl_sink), its value decoded in the same pass
    decode = msgspec.json.Decoder(msgspec.defstruct("StatLine", [("value", Stat)])).decode
    console = console or Console()
    per_window: dict[int, list[Stat]] = defaultdict(list)
    with open(stats_path, "rb") as fh:
        for line in fh:
            if line.strip():
                stat = decode(line).value
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
