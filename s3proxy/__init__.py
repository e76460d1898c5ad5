"""s3proxy: serve a private S3 bucket as a static website through a local disk cache.

A request path maps to an object key (:mod:`s3proxy.keys`); the object is served from the
memory or disk cache (:mod:`s3proxy.cache`) and fetched from S3 (:mod:`s3proxy.origin`) only on a
miss, once per key however many clients ask (:mod:`s3proxy.readthrough`).
"""

__version__ = "0.1.0"
