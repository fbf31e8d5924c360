"""``tweetoscope dashboard``: a live Bokeh view of a running pipeline (its Kafka topics or output folder)."""

from .app import Dashboard, serve
from .feed import KafkaFeed, OutDirFeed
from .state import DashboardState

__all__ = ["Dashboard", "serve", "KafkaFeed", "OutDirFeed", "DashboardState"]
