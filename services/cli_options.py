"""Click options shared by the embedded commands (:mod:`services.cli`) and the distributed ones
(:mod:`services.distributed_cli`): one definition, so both modules read the same flags, and
neither needs to import the other for them."""

from __future__ import annotations

import click

plugins_option = click.option(
    "--plugins", "plugin_dirs", multiple=True, type=click.Path(file_okay=False),
    help="Directory of plugin modules (repeatable; also THEODOLITE_PLUGINS).",
)
params_option = click.option("-p", "--param", "params", multiple=True, metavar="NAME=VALUE", help="Set a parameter; VALUE is read as YAML.")

seed_option = click.option(
    "--seed", type=click.IntRange(min=0, max=2**63 - 1), default=None,
    help="The job's seed: each step's task context gets a seed derived from it and the step name (default: random; "
         "--json reports it).")
