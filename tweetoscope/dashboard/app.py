"""The Bokeh server application: one shared feed and state, one document per browser session."""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

from bokeh.application import Application
from bokeh.application.handlers.function import FunctionHandler
from bokeh.document import Document
from bokeh.layouts import column, row
from bokeh.models import Div
from bokeh.server.server import Server
from tornado.ioloop import IOLoop, PeriodicCallback

from .panels import Accuracy, AlertFeed, Health, Inspector, Outcomes, TopK
from .state import DashboardState

__all__ = ["Dashboard", "serve"]

logger = logging.getLogger(__name__)


class Dashboard:
    """A feed (:mod:`.feed`) polled every ``interval`` seconds into one shared :class:`DashboardState`.

    The feed's poll (Kafka, files) and ``dask_info()`` (a Dask query) run on a thread of the
    dashboard's own, never on the event loop: the Bokeh callbacks only render what the state
    holds. Each panel's update is guarded: one that fails logs, says so in the status line,
    and the others go on.
    """

    def __init__(self, feed, windows: tuple[int, ...], *, interval: float = 1.0,
                 dask_info: Callable[[], dict[str, Any]] | None = None):
        self.feed, self.windows, self.interval, self.dask_info = feed, tuple(windows), interval, dask_info
        self.state = DashboardState()
        self.error: str | None = None  # why the last poll failed, if it did
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dashboard-feed")
        self._polling = False
        self._poller: PeriodicCallback | None = None

    def start(self) -> None:
        """Poll the feed now and every ``interval`` seconds (on the current event loop)."""
        if self._poller is None:
            IOLoop.current().add_callback(self.poll)
            self._poller = PeriodicCallback(self.poll, self.interval * 1000)
            self._poller.start()

    def _read(self) -> tuple[Any, dict[str, Any] | None]:
        """The feed's news and the Dask cluster's figures (on the dashboard's thread)."""
        got = self.feed.poll()
        info = None
        if self.dask_info is not None:
            try:
                info = self.dask_info()
            except Exception:  # noqa: BLE001 - the cluster went away: say nothing rather than fail the page
                info = {}
        return got, info

    async def poll(self) -> None:
        """One poll off the loop, then its ingestion on the loop (skipped while the previous one runs)."""
        if self._polling:
            return
        self._polling = True
        try:
            got, info = await asyncio.get_running_loop().run_in_executor(self._executor, self._read)
            self.state.ingest(got.messages, got.tweets, got.lag, dask=info)
            self.error = None
        except Exception as exc:  # noqa: BLE001 - never take the page down: say what went wrong on it
            logger.exception("dashboard: reading the pipeline failed")
            self.error = f"Reading the pipeline failed: {exc}"
        finally:
            self._polling = False

    def make_document(self, doc: Document) -> None:
        """Build one session's page: a status line and the panels, redrawn every ``interval`` s."""
        panels = [TopK(self.state), AlertFeed(self.state), Accuracy(self.state, self.windows),
                  Outcomes(self.state, self.windows), Inspector(self.state), Health(self.state)]
        status = Div(text="", name="status", styles={"font-size": "1.1em"})
        header = Div(text=f"<h2>Tweetoscope</h2><p>reading {self.feed.source}</p>", name="header")
        top, feed, accuracy, outcomes, inspector, health = (p.layout for p in panels)
        doc.add_root(column(header, status, row(top, feed, sizing_mode="stretch_width"),
                            row(accuracy, outcomes, sizing_mode="stretch_width"),
                            row(inspector, health, sizing_mode="stretch_width"), sizing_mode="stretch_width",
                            name="root"))
        doc.title = "Tweetoscope"

        def update() -> None:
            problems = [why for why in (self.error, self.feed.status) if why]
            for p in panels:
                try:
                    p.update()
                except Exception as exc:  # noqa: BLE001 - one panel failing leaves the others drawn
                    logger.exception("dashboard: the %s panel failed to update", p.name)
                    problems.append(f"the {p.name} panel failed: {exc}")
            text = "; ".join(problems)
            text = f'<span style="color:#b00">{text}</span>' if text else ""
            if status.text != text:
                status.text = text

        update()
        doc.add_periodic_callback(update, int(self.interval * 1000))

    def close(self) -> None:
        if self._poller is not None:
            self._poller.stop()
        self._executor.shutdown(wait=True)
        self.feed.close()


def serve(dashboard: Dashboard, *, address: str = "127.0.0.1", port: int = 5006,
          allow_websocket_origin: list[str] | None = None, io_loop=None) -> Server:
    """Start a Bokeh server for ``dashboard`` on ``address:port`` (on ``io_loop``, default the current one).

    Returns the started server; its page is ``http://address:port/``.
    """
    origins = allow_websocket_origin or [f"{address}:{port}", f"localhost:{port}", f"127.0.0.1:{port}"]
    server = Server({"/": Application(FunctionHandler(dashboard.make_document))}, address=address, port=port,
                    allow_websocket_origin=origins, io_loop=io_loop, num_procs=1)
    server.start()
    dashboard.start()
    return server
