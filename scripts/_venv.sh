# Sourced by scripts/demo and scripts/test: make .venv (once) and install s3proxy into it with
# the extras given in $S3PROXY_EXTRAS. Works on a fresh machine with Python 3.11+.
#
# pip runs only when pyproject.toml (or the Python) changed since it last installed these
# extras: a stamp file in .venv holds a hash of both. So a second start takes no network and
# no pip time; the install is editable, so source changes need no reinstall either.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
_stamp=.venv/.s3proxy-installed-${S3PROXY_EXTRAS}
_wanted=$(.venv/bin/python -c 'import hashlib, sys
print(hashlib.sha256(open("pyproject.toml", "rb").read() + sys.version.encode()).hexdigest())')
if [ "$(cat "$_stamp" 2>/dev/null)" != "$_wanted" ]; then
    .venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip
    .venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[${S3PROXY_EXTRAS}]"
    echo "$_wanted" > "$_stamp"
    if [ "$S3PROXY_EXTRAS" = dev ]; then  # dev includes demo's extras
        echo "$_wanted" > .venv/.s3proxy-installed-demo
    fi
fi
unset _stamp _wanted
