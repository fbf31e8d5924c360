"""``tweetoscope alerts``: read the ``alerts`` topic and print them, one line per (cascade, window)."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from .config import Settings
from .schemas import ALERTS, SchemaError

if TYPE_CHECKING:
    from .schemas import Alert

__all__ = ["read_topic", "print_alerts", "top_table"]


def read_topic(settings: Settings, name: str = ALERTS.name, *, follow: bool = False, timeout: float = 1.0):
    """Yield the decoded messages of topic ``name`` from its beginning; stop at its end unless ``follow``.

    Messages that do not decode are skipped. Duplicates (a stage replayed after a crash)
    are not filtered here; see :func:`print_alerts`.
    """
    from streams.kafka import read_topic as read_messages

    from .schemas import TOPICS

    decode = TOPICS[name].decode
    for msg in read_messages(settings.kafka_config(), settings.topic_prefix + name, follow=follow, timeout=timeout):
        try:
            yield decode(msg.value() or b"")
        except SchemaError:
            continue


def top_table(latest: dict[tuple[str, int], "Alert"], k: int = 20):
    """A rich table of the ``k`` largest forecasts among the latest alert per (cascade, window)."""
    from rich.table import Table

    top = sorted(latest.values(), key=lambda a: -a.n_tot)[:k]
    table = Table(title=f"top {len(top)} of {len(latest):,} alerts (largest forecast first)", title_justify="left")
    for col, justify in (("cascade", "right"), ("window (s)", "right"), ("forecast", "right"), ("seen", "right"),
                         ("model", "right"), ("message", "left")):
        table.add_column(col, justify=justify)
    for a in top:
        table.add_row(a.cid, str(a.T_obs), f"{a.n_tot:,.0f}", f"{a.n_obs:,}", str(a.model_version), a.msg[:60])
    return table


def _new_alerts(settings: Settings, *, follow: bool, min_size: float, latest: dict):
    """The alerts of at least ``min_size``, each (cid, T_obs) forecast once: a repeat (a stage replayed
    after a crash) is skipped. ``latest`` maps (cid, T_obs) to the last alert yielded."""
    for a in read_topic(settings, ALERTS.name, follow=follow):
        key = (a.cid, a.T_obs)
        held = latest.get(key)
        if a.n_tot < min_size or (held is not None and held.n_tot == a.n_tot):
            continue
        latest[key] = a
        yield a


def print_alerts(settings: Settings, *, follow: bool, min_size: float, as_json: bool, top: int = 20,
                 live: bool | None = None) -> int:
    """Print alerts, idempotent on (cid, T_obs): a repeated alert is printed once. Returns the exit code.

    ``as_json``: one JSON object per line (for pipes). Otherwise, on a terminal (``live``,
    default: stdout is a TTY), a self-updating table of the ``top`` largest forecasts;
    elsewhere one text line per alert.
    """
    from .schemas import encode

    live = sys.stdout.isatty() if live is None else live
    latest: dict = {}
    alerts = _new_alerts(settings, follow=follow, min_size=min_size, latest=latest)
    try:
        if live and not as_json:
            from rich.live import Live

            with Live(top_table(latest, top), refresh_per_second=4) as screen:
                for _ in alerts:
                    screen.update(top_table(latest, top))
            return 0
        for a in alerts:
            if as_json:
                sys.stdout.write(encode(a).decode() + "\n")
            else:
                sys.stdout.write(f"{a.cid:>10}  T_obs={a.T_obs:<6} forecast {a.n_tot:>10,.0f}  "
                                 f"(seen {a.n_obs}, model v{a.model_version})  {a.msg[:60]}\n")
            sys.stdout.flush()
    except KeyboardInterrupt:
        return 130
    return 0
