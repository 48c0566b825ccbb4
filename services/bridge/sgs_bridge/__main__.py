"""`python -m sgs_bridge ...` is `sgs bridge ...` without loading the rest of the CLI."""

from sgs.cli.bridge import app

app()
