"""Batch scripts from jinja2 templates.

One template per batch system in ``schedulers/templates/`` (``slurm.sh.j2``...), each
including ``launcher.sh.j2`` for the launcher's command line.  A site overrides any of them
by putting a file of the same name in ``<site>/templates/``.  ``StrictUndefined``: a typo in a
template is an error naming the file and line, never an empty string in a job script.

Every template sees the same variables (:data:`SCRIPT_FIELDS`), and the filter ``q``, which
quotes a value for the shell (``shlex.quote``).
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .base import TemplateError

#: The variables every template receives (documented for site templates).
SCRIPT_FIELDS: dict[str, str] = {
    "batch_job_id": "this batch job's id in the store (the launcher records it)",
    "job_name": "a name for the scheduler's listing: bf-<batch_job_id>",
    "scheduler": "local, slurm, pbs, cobalt, lsf or flux",
    "project": "the allocation charged ('' for the scheduler's default)",
    "queue": "the queue / partition ('' for the scheduler's default)",
    "num_nodes": "nodes requested",
    "wall_time_min": "wall time requested, in minutes",
    "wall_time_hms": "the same as HH:MM:SS",
    "job_mode": "serial or mpi",
    "filter_tags": "the launcher serves only tasks carrying these tags (dict)",
    "pre_run": "shell lines run before the launcher (options.pre_run)",
    "directives": "extra scheduler directives, one per line (options.directives)",
    "options": "every option of the job (dict), for site templates",
    "site": "the site directory",
    "db_url": "the store's URL when it is not the site's own SQLite file, else ''",
    "python": "the Python interpreter that runs the launcher",
    "log_path": "where the job's output goes",
    "platform": "the launcher's node discovery (--platform)",
    "mpi_launcher": "the launcher's MPI flavour (--mpi-launcher), '' to detect",
    "workers": "worker processes per launcher (-n), None for its default",
    "idle_timeout": "seconds with nothing to run before the launcher stops, None: never",
}


def render_script(template_name: str, fields: Mapping[str, Any],
                  site_templates: Path | None = None) -> str:
    """Render ``template_name`` with ``fields``; a file of that name in ``site_templates``
    wins over the packaged one."""
    import jinja2

    loaders: list[jinja2.BaseLoader] = []
    if site_templates is not None and site_templates.is_dir():
        loaders.append(jinja2.FileSystemLoader(str(site_templates)))
    loaders.append(jinja2.PackageLoader("balsam_futures.schedulers", "templates"))
    env = jinja2.Environment(loader=jinja2.ChoiceLoader(loaders),
                             undefined=jinja2.StrictUndefined, keep_trailing_newline=True,
                             autoescape=False, trim_blocks=True, lstrip_blocks=True)
    env.filters["q"] = lambda value: shlex.quote(str(value))
    try:
        return env.get_template(template_name).render(**fields)
    except jinja2.TemplateNotFound as exc:
        raise TemplateError(f"batch-script template {exc.name!r} was not found in "
                            f"{site_templates} nor among the packaged templates") from exc
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateError(f"batch-script template {exc.filename or exc.name}, line "
                            f"{exc.lineno}: {exc.message}") from exc
    except jinja2.UndefinedError as exc:
        raise TemplateError(f"batch-script template {_where(template_name, site_templates)}: "
                            f"{exc.message}; the variables are: "
                            f"{', '.join(sorted(SCRIPT_FIELDS))}") from exc


def _where(name: str, site_templates: Path | None) -> str:
    if site_templates is not None and (site_templates / name).is_file():
        return str(site_templates / name)
    return name
