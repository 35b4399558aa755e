"""The ``balsam-futures`` group; each command module adds its commands to it."""

from __future__ import annotations

import click

from .. import __name__ as _pkg
from ._common import USER_ERRORS, fail


class _OneLineErrors(click.Group):
    """Runs every command (of nested groups too: their errors pass through here) and turns
    a user's mistake into one ``error:`` line and exit status 1, so no command repeats it."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except BrokenPipeError:
            raise  # `balsam-futures ls | head`: click's own handler exits quietly
        except USER_ERRORS as exc:
            fail(exc)


@click.group(cls=_OneLineErrors, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name=_pkg)
def main() -> None:
    """Run Python callables and shell applications from a task store."""
