"""AWS CDK app for Meterline (one stack; see stack.py)."""

from __future__ import annotations

import sys

from infra_cdk.constants import REPO_ROOT

# The stack builds its tables from `meterline.store.schema`. Normally meterline is installed
# (`pip install -e '.[cdk]'`); from a bare checkout, import it from layers/ instead.
try:
    import meterline  # noqa: F401
except ImportError:  # pragma: no cover - depends on how the checkout was set up
    sys.path.insert(0, str(REPO_ROOT / "layers"))
