#!/usr/bin/env bash
# Creates .venv and installs Meterline with its dev and CDK extras; re-installs only when
# pyproject.toml changed. Sourced by scripts/meterline and scripts/test.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv"
py="${PYTHON:-python3}"
if [ ! -x "$venv/bin/python" ]; then
  "$py" -m venv "$venv"
fi
stamp="$venv/.meterline-installed"
want="$(sha256sum "$root/pyproject.toml" | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  "$venv/bin/python" -m pip install --quiet --upgrade pip >/dev/null
  "$venv/bin/python" -m pip install --quiet -e "$root[dev,cdk]"
  echo "$want" > "$stamp"
fi
export PATH="$venv/bin:$PATH"
