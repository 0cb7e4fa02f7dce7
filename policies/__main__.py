"""The prodstack policy pack: ``pulumi preview --policy-pack policies``.

Constructing ``PolicyPack`` starts the analyzer's gRPC server and blocks, so tests
never import this module; they import the policy modules instead.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pulumi_policy import EnforcementLevel, PolicyPack  # noqa: E402

from policies import all_policies  # noqa: E402

PolicyPack(
    name="prodstack",
    enforcement_level=EnforcementLevel.MANDATORY,
    policies=all_policies(),
)
