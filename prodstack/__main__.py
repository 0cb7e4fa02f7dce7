"""`python -m prodstack` is the `prodstack` command."""

from prodstack.cli import main

raise SystemExit(main())
