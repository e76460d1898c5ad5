"""``s3proxy publish DIR``: a site's files into the bucket, by content, resumably.

The command's options are in :mod:`s3proxy.cli`; :mod:`~s3proxy.publish.command` turns their
values into a :func:`~s3proxy.publish.run.publish`. Below it, each module has one job: the
plan (pure), the local tree, object headers (pure), one file's transfer, each request's
timeout and retries, the bandwidth estimate (pure), the S3 calls, the resume state, progress,
purging the proxies.
"""

from __future__ import annotations

import dataclasses

from s3proxy.config import OriginConfig

#: The server's S3 settings publish takes: not its deadline per GetObject (publish times each
#: request by its bytes), nor its bound on GetObjects at once (publish has --jobs).
S3_SETTINGS = tuple(
    f
    for f in dataclasses.fields(OriginConfig)
    if f.name not in ("origin_deadline", "s3_max_connections")
)
