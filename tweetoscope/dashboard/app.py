"""The Bokeh server application: one shared feed and state, one document per browser session."""

from __future__ import annotations

import logging
import time
from typing import Any, Callable

from bokeh.application import Application
from bokeh.application.handlers.function import FunctionHandler
from bokeh.document import Document
from bokeh.layouts import column, row
from bokeh.models import Div
from bokeh.server.server import Server

from .panels import Accuracy, AlertFeed, Health, Inspector, TopK
from .state import DashboardState

__all__ = ["Dashboard", "serve"]

logger = logging.getLogger(__name__)


class Dashboard:
    """A feed (:mod:`.feed`) read at most every ``interval`` seconds into one shared :class:`DashboardState`."""

    def __init__(self, feed, windows: tuple[int, ...], *, interval: float = 1.0,
                 dask_info: Callable[[], dict[str, Any]] | None = None):
        self.feed, self.windows, self.interval = feed, tuple(windows), interval
        self.state = DashboardState(dask_info=dask_info)
        self._polled_at = 0.0

    def refresh(self) -> None:
        """Poll the feed (unless another session just did) and ingest what came."""
        if time.monotonic() - self._polled_at < self.interval / 2:
            return
        self._polled_at = time.monotonic()
        got = self.feed.poll()
        self.state.ingest(got.messages, got.tweets, got.lag)

    def make_document(self, doc: Document) -> None:
        """Build one session's page: a status line and the five panels, refreshed every ``interval`` s."""
        panels = [TopK(self.state), AlertFeed(self.state), Accuracy(self.state, self.windows),
                  Inspector(self.state), Health(self.state)]
        status = Div(text="", name="status", styles={"font-size": "1.1em"})
        header = Div(text=f"<h2>Tweetoscope</h2><p>reading {self.feed.source}</p>", name="header")
        top, feed, accuracy, inspector, health = (p.layout for p in panels)
        doc.add_root(column(header, status, row(top, feed, sizing_mode="stretch_width"), accuracy,
                            row(inspector, health, sizing_mode="stretch_width"), sizing_mode="stretch_width",
                            name="root"))
        doc.title = "Tweetoscope"

        def update() -> None:
            try:
                self.refresh()
            except Exception as exc:  # never take the page down: say what went wrong on it
                logger.exception("dashboard refresh failed")
                status.text = f'<span style="color:#b00">Reading the pipeline failed: {exc}</span>'
                return
            why = self.feed.status
            status.text = f'<span style="color:#b00">{why}</span>' if why else ""
            for p in panels:
                p.update()

        update()
        doc.add_periodic_callback(update, int(self.interval * 1000))

    def close(self) -> None:
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
    return server
