"""`python -m api` runs the `stencil` command."""

from api.cli import app

app(prog_name="stencil")
