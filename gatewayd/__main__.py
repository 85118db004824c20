"""`python -m gatewayd` is the `gatewayd` command."""

from gatewayd.cli import main

raise SystemExit(main())
