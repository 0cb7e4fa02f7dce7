"""Pulumi entrypoint (``main: stacks/`` in Pulumi.yaml).

Pulumi runs this file with ``stacks/`` as the working directory; the repository root
goes on ``sys.path`` so ``components`` and ``stacks`` import as packages.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from stacks.config import ConfigError  # noqa: E402
from stacks.program import main  # noqa: E402

try:
    main()
except ConfigError as err:
    # One line per problem; exit before any resource is registered.
    print("prodstack: invalid configuration:", file=sys.stderr)
    for line in err.problems:
        print(f"  {line}", file=sys.stderr)
    raise SystemExit(1) from None
