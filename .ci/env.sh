# Sourced by .ci/serve, .ci/test and .ci/run: finds or installs uv, then installs the locked dependencies.
# Needs only Python 3.11+ and network access to PyPI.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
UV_VERSION="0.13.9"

PYTHON="${PYTHON:-}"
if [ -z "$PYTHON" ]; then
  for candidate in python3.13 python3.12 python3.11 python3; do
    # Resolve to the real interpreter: version-manager shims (pyenv) confuse uv and may not run at all.
    if resolved="$("$candidate" -c 'import sys; assert sys.version_info >= (3, 11); print(sys.executable)' 2>/dev/null)"; then
      PYTHON="$resolved"
      break
    fi
  done
fi
if [ -z "$PYTHON" ]; then
  echo "error: Python 3.11 or newer is required (set PYTHON=/path/to/python3.11)" >&2
  exit 1
fi

if command -v uv >/dev/null 2>&1; then
  UV="$(command -v uv)"
elif [ -x "$ROOT/.tools/bin/uv" ]; then
  UV="$ROOT/.tools/bin/uv"
else
  echo "installing uv $UV_VERSION into .tools/ ..." >&2
  "$PYTHON" -m venv "$ROOT/.tools"
  "$ROOT/.tools/bin/python" -m pip install --quiet --disable-pip-version-check "uv==$UV_VERSION"
  UV="$ROOT/.tools/bin/uv"
fi

export UV_PYTHON="$PYTHON"
"$UV" sync --locked --quiet --all-extras
