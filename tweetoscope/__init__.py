"""Tweetoscope: real-time prediction of retweet cascade popularity.

The application layer: configuration, message schemas, pipeline stages, the
command line and the dashboard. Numerics live in :mod:`estimators`, streaming
plumbing in :mod:`streams`.
"""

__version__ = "0.1.0"
