"""``python -m balsam_futures``: the same as the ``balsam-futures`` command."""

from .cli import main

main()
