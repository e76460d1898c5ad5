"""The local cache: bodies as flat files named by a hash, metadata in memory and in a
process-safe index. The only package that imports diskcache (in :mod:`.index`)."""

from s3proxy.cache.entry import Entry
from s3proxy.cache.files import Writer, object_hash
from s3proxy.cache.store import Cache

__all__ = ["Cache", "Entry", "Writer", "object_hash"]
