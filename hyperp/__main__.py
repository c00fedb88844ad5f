"""`python -m hyperp`: the CLI, where the `hyperp` script is not on PATH (an uninstalled checkout on PYTHONPATH)."""

from hyperp.cli import app

app(prog_name="hyperp")
