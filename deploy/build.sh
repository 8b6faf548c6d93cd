#!/usr/bin/env bash
# Build chatwire into PREFIX (a self-contained virtualenv: PREFIX/bin/chatwire) from this checkout:
# the web client (Node.js 20+, unless CHATWIRE_WEB_DIST names a build), the wheel, then the locked runtime
# dependencies (hash-checked) and the wheel. The container recipe (deploy/Containerfile) runs exactly this, and
# so does the test suite (tests/e2e/test_deploy.py), which then starts the result.
#   deploy/build.sh /opt/chatwire            PYTHON=python3.12 deploy/build.sh /opt/chatwire
set -euo pipefail
PREFIX=${1:?usage: deploy/build.sh PREFIX}
PYTHON=${PYTHON:-python3}
SRC=$(cd "$(dirname "$0")/.." && pwd)
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "build.sh: $PYTHON is older than 3.11" >&2; exit 1; }

# 1. The wheel, with the built web client inside (setup.py runs `npm ci` and `npm run build` when web/dist is
#    missing or older than its sources).
"$PYTHON" -m venv "$WORK/build-env"
"$WORK/build-env/bin/pip" install -q --disable-pip-version-check 'pip>=24' 'build>=1.2'
"$WORK/build-env/bin/python" -m build --wheel --outdir "$WORK/dist" "$SRC" >"$WORK/build.log" 2>&1 \
  || { cat "$WORK/build.log" >&2; exit 1; }
WHEEL=$(ls "$WORK"/dist/chatwire-*.whl)

# 2. The runtime: locked dependencies only (no test tools), then chatwire itself.
"$PYTHON" -m venv "$PREFIX"
"$PREFIX/bin/pip" install -q --disable-pip-version-check --upgrade 'pip>=24'
"$PREFIX/bin/pip" install -q --disable-pip-version-check --require-hashes -r "$SRC/requirements.lock"
"$PREFIX/bin/pip" install -q --disable-pip-version-check --no-deps "$WHEEL"

# 3. A smoke check of what was built: the command runs and the web client is in the package.
"$PREFIX/bin/chatwire" version >/dev/null
"$PREFIX/bin/python" -I -c 'import chatwire, pathlib, sys; sys.exit(not (pathlib.Path(chatwire.__file__).parent / "static" / "index.html").exists())' \
  || { echo "build.sh: the installed package has no web client" >&2; exit 1; }
echo "build.sh: chatwire $("$PREFIX/bin/chatwire" version) installed in $PREFIX"
