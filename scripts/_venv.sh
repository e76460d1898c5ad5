# Sourced by scripts/demo and scripts/test: make .venv (once) and install s3proxy into it with
# the extras given in $S3PROXY_EXTRAS. Works on a fresh machine with Python 3.11+.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[${S3PROXY_EXTRAS}]"
