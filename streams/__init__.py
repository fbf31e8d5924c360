"""Streaming plumbing of Tweetoscope on streamz: sources, sinks, windowing, Dask submission.

Knows about tweets, cascades, topics and offsets; knows nothing about Hawkes processes.
"""
