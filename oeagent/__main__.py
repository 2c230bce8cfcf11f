"""Allow ``python -m oeagent``."""

from oeagent.cli import main

raise SystemExit(main())
