"""``python -m s3proxy``: the same as the ``s3proxy`` command."""

from s3proxy.cli import main

main()
