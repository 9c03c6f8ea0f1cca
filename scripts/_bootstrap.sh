# Sourced by the scripts: installs what the project needs, once, and again only when the pins change.
#   - npm packages from package-lock.json (npm ci) into node_modules/
#   - a Python virtualenv in .venv/ with the project (editable) and its test and lint extras, constrained by
#     constraints.txt so every machine gets the same versions
# Needs python3 (>= 3.11) and node/npm (>= 20) on PATH; downloads from PyPI and npm only.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

_stamp() { cat "$@" 2>/dev/null | sha256sum | cut -c1-16; }

if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  echo "node and npm (>= 20) are required" >&2; exit 1
fi
npm_stamp="$(_stamp package.json package-lock.json)"
if [ ! -f node_modules/.hcl-stamp ] || [ "$(cat node_modules/.hcl-stamp)" != "$npm_stamp" ]; then
  echo "==> installing npm packages (npm ci)" >&2
  npm ci --no-audit --no-fund --loglevel=error >&2
  echo "$npm_stamp" > node_modules/.hcl-stamp
fi
# the portal's JavaScript (ethers, HPKE) is bundled from node_modules into gateway/portal/static/vendor/, and the
# API docs' Swagger UI and ReDoc are copied there (gateway/portal/static/src/docs-assets.mjs): no CDN anywhere
portal_stamp="$(_stamp package.json package-lock.json gateway/portal/static/src/vendor.js gateway/portal/static/src/docs-assets.mjs)"
if [ ! -f gateway/portal/static/vendor/.hcl-stamp ] || [ "$(cat gateway/portal/static/vendor/.hcl-stamp)" != "$portal_stamp" ]; then
  echo "==> bundling the portal's JavaScript (esbuild) and the API docs' assets" >&2
  npm run --silent build:portal >&2
  echo "$portal_stamp" > gateway/portal/static/vendor/.hcl-stamp
fi

PY="${PYTHON:-python3}"
py_stamp="$(_stamp pyproject.toml constraints.txt)"
if [ ! -x .venv/bin/python ] || [ ! -f .venv/.hcl-stamp ] || [ "$(cat .venv/.hcl-stamp)" != "$py_stamp" ]; then
  echo "==> installing Python packages into .venv" >&2
  [ -x .venv/bin/python ] || "$PY" -m venv .venv
  .venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip >&2
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[test,lint]' >&2
  echo "$py_stamp" > .venv/.hcl-stamp
fi
export PATH="$ROOT/.venv/bin:$PATH"
