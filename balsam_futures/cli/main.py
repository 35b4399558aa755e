"""The ``balsam-futures`` group; each command module adds its commands to it."""

from __future__ import annotations

import click

from .. import __name__ as _pkg


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name=_pkg)
def main() -> None:
    """Run Python callables and shell applications from a task store."""
