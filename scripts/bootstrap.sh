#!/usr/bin/env bash
# Creates .venv and installs Meterline with the extras the caller needs; re-installs only when
# pyproject.toml changed. Sourced by scripts/meterline (METERLINE_EXTRAS=local: the runtime plus the
# embedded AWS, no test or deployment tooling) and scripts/test (dev,cdk: everything).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv"
py="${PYTHON:-python3}"
extras="${METERLINE_EXTRAS:-dev,cdk}"
if [ ! -x "$venv/bin/python" ]; then
  echo "meterline: creating $venv" >&2
  "$py" -m venv "$venv"
fi
want="$(cat "$root/pyproject.toml" "$root/layers/constraints.txt" | sha256sum | cut -d' ' -f1)"
stamp() { echo "$venv/.meterline-installed-${1//,/-}"; }
installed() { [ -f "$(stamp "$1")" ] && [ "$(cat "$(stamp "$1")")" = "$want" ]; }
# A full install (dev,cdk) includes the local extra.
if ! installed "$extras" && ! { [ "$extras" = "local" ] && installed "dev,cdk"; }; then
  echo "meterline: installing dependencies [$extras] into .venv (first run or pyproject.toml changed)..." >&2
  started=$SECONDS
  # The venv's own pip is enough from 21.3 (editable installs from pyproject.toml); upgrading it
  # anyway cost a download and ~5-10 s of every first run.
  if ! "$venv/bin/python" -c 'import sys, pip; sys.exit(tuple(map(int, pip.__version__.split(".")[:2])) < (21, 3))'
  then
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip >/dev/null
  fi
  # One line per package as pip resolves it: progress without pip's full log.
  # Constrained to the layer's pinned set: tests run exactly what ships (layers/constraints.txt).
  "$venv/bin/python" -m pip install --disable-pip-version-check -c "$root/layers/constraints.txt" \
    -e "$root[$extras]" 2>&1 \
    | { grep --line-buffered -E '^(Collecting|Successfully installed|ERROR|error)' || true; } \
    | sed -u -e 's/^Collecting /  + /' -e 's/ (from .*//' >&2
  echo "$want" > "$(stamp "$extras")"
  echo "meterline: dependencies ready in $((SECONDS - started)) s" >&2
fi
export PATH="$venv/bin:$PATH"
