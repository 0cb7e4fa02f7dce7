"""prodstack's command line: plan, diff, cost and choose, for the cloud and VPS profiles."""

from pathlib import Path

# The project this package operates: Pulumi.yaml, stacks/, components/, pyinfra/ and app/
# sit beside it. Every module takes it from here.
REPO = Path(__file__).resolve().parents[1]
