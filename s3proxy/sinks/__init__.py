"""Metrics sinks: every request's :class:`~s3proxy.record.RequestRecord`, delivered off the
request path.

:meth:`Sinks.emit` is called at the end of each request and only appends to bounded queues
(O(1), never blocks, never raises). One task per sink drains its queue in batches, connects
and reconnects with exponential backoff, and drops records — counted, and logged at most once
per interval — when the sink is slow, dead or refusing. A sink can never slow or fail a
response.
"""

from s3proxy.sinks.base import Enricher, Sink, SinkRunner, Sinks

__all__ = ["Enricher", "Sink", "SinkRunner", "Sinks"]
