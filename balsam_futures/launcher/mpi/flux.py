"""Flux ``flux run`` (inside a flux instance, e.g. a flux-managed allocation).

    flux run -N M -n N -c T [-g G] --requires=hosts:h1,h2 [--env=K=V ...] command...

Options from flux-core's flux-run(1) and the option pages it includes,
https://github.com/flux-framework/flux-core/tree/master/doc/man1/common (job-param-common.rst:
-N; job-param-pertask.rst: -n, -c, -g; job-constraints.rst: --requires; job-env-rules.rst: --env).
``-N`` with ``-n`` spreads tasks evenly over the nodes, which gives P per node without the
per-resource ``--tasks-per-node`` (that one may not be combined with ``-c``/``-g``).
``--requires=hosts:`` takes an RFC 29 hostlist; a comma-separated list is one.
Flux assigns and binds GPUs itself (``-g``), so ``layout.gpu_ids`` is not used.
``--env=VAR=VAL`` runs VAL through ``string.Template``, so ``$`` is doubled to stay literal.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from .base import MpiLauncher, RankLayout, check_command, check_env


class FluxLauncher(MpiLauncher):
    name = "flux"

    default_executable = "flux"

    def argv(self, layout: RankLayout, command: Sequence[str],
             env: Mapping[str, str] | None = None) -> list[str]:
        command = check_command(command)
        args = [self.executable, "run", "-N", str(layout.num_nodes), "-n", str(layout.num_ranks),
                "-c", str(layout.threads_per_rank)]
        if layout.gpus_per_rank:
            args += ["-g", str(layout.gpus_per_rank)]
        args.append("--requires=hosts:" + ",".join(layout.hosts))
        for key, value in check_env(env).items():
            args.append(f"--env={key}={value.replace('$', '$$')}")
        return [*args, *command]
