"""The `hyperp` command line: subcommands by noun (train, quickstart, sweep, fit, plot, bench, check, predict,
data).

The CLI is one layer on top of the library: hyperp.cli.core holds the shared error style, JSON printer and
exit-code mapping; each noun's Typer app lives in its own module (train, sweep, fit, plot, bench, quickstart,
check, predict, data) and imports torch, Ray, scipy, matplotlib, optuna, pandas or tokenizers inside the command
that needs them. The nouns
are loaded lazily (`LazyGroup`), so `hyperp --help` and `hyperp sweep ls` start in well under a second.
"""

from __future__ import annotations

import importlib

import typer

from hyperp.cli.core import SUBAPPS, Group, command, new_app
from hyperp.cli.quickstart import quickstart_command
from hyperp.cli.train import train_command


class LazyGroup(Group):
    """The top-level group: `train` and `quickstart` are built eagerly (both light), the nouns of SUBAPPS on use."""

    listing = False  # True while the top-level help is drawn: nouns then show their one-line help unloaded

    def list_commands(self, ctx):
        return [*super().list_commands(ctx), *(n for n in SUBAPPS if n not in self.commands)]

    def get_command(self, ctx, name):
        cmd = super().get_command(ctx, name)
        if cmd is not None or name not in SUBAPPS:
            return cmd
        module, help_text = SUBAPPS[name]
        if self.listing:
            return Group(name=name, help=help_text)
        cmd = typer.main.get_command(importlib.import_module(module).app)
        cmd.name = name
        self.commands[name] = cmd
        return cmd

    def format_help(self, ctx, formatter):
        self.listing = True
        try:
            return super().format_help(ctx, formatter)
        finally:
            self.listing = False


app = new_app("Scaling-law sweeps and fits for language models trained with HyperP.", cls=LazyGroup)
command(app, "train")(train_command)
command(app, "quickstart")(quickstart_command)


if __name__ == "__main__":
    app()
