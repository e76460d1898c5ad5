#!/usr/bin/env bash
# Build the s3proxy image as s3proxy:<version> and s3proxy:latest, from the repository root.
# Extra arguments go to `docker build` (e.g. --platform linux/arm64, --pull).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

version="$(sed -n 's/^__version__ = "\(.*\)"$/\1/p' s3proxy/__init__.py)"
if [[ -z "$version" ]]; then
    echo "build.sh: no __version__ in s3proxy/__init__.py" >&2
    exit 1
fi

docker build -f docker/Dockerfile -t "s3proxy:${version}" -t s3proxy:latest "$@" .
