"""``tweetoscope dashboard``: a live Bokeh view of a running pipeline (its in-memory bus, Kafka topics or output folder)."""

from .app import Dashboard, serve
from .feed import KafkaFeed, MemoryFeed, OutDirFeed
from .state import DashboardState

__all__ = ["Dashboard", "serve", "KafkaFeed", "MemoryFeed", "OutDirFeed", "DashboardState"]
