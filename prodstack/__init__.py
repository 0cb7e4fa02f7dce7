"""prodstack's command line: plan, diff, cost and choose, for the cloud and VPS profiles."""
