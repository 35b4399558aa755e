"""BalsamExecutor: a ``concurrent.futures.Executor`` whose tasks live in a database.

    BalsamExecutor.submit(fn, *args)                   launcher (child process, or elsewhere)
      pickle at once (errors raise here)                  claims READY tasks in batches
      store.create_tasks([TaskSpec]) ── tasks row ──>     runs them in warm workers
      registry[task_id] = BalsamFuture                    writes outcomes + history
                    ▲                                              │
                    └──── Watcher thread reads events after its cursor ┘

The executor is thin: it checks arguments, builds TaskSpecs, stores them and hands out
futures.  Running tasks is the launcher's job (``launcher/``), resolving futures the watcher's
(``futures.py``), and the store owns every task's state (``backends/``).  Its own machinery:

    _dependencies.py   futures among a call's arguments, and depends_on, as dependencies
    _mapping.py        map(): the call of each task (chunks, shell parameters), results in order
    _exit.py           interpreter exit and Ctrl-C: stop early, leaving tasks in the store
"""

from __future__ import annotations

import functools
import itertools
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent import futures as _cf
from pathlib import Path
from typing import Any

from . import _exit
from ._dependencies import call_dependencies
from ._mapping import (  # _process_chunk: stored map tasks name it here
    MAP_BATCH,
    _process_chunk,  # noqa: F401
    map_calls,
    result_iterator,
    task_name,
)
from .apps import ShellApp, shell_call
from .backends import LauncherInfo, SqlStore, open_store
from .futures import BalsamFuture, Registry, Watcher, _mark_cancelled, apply_event
from .launcher.child import LauncherProcess, worker_python_path
from .launcher.config import LauncherConfig, local_node
from .launcher.packing import NodePool
from .launcher.workers import pack_initializer
from .query import TaskQuery
from .serialization import dump_call, dump_callable
from .sitedir import Site, open_site, resolve_store_url
from .submission import Submitter
from .tasks import FINAL, TaskOptions, TaskSpec, TaskState, current_task
from .validation import choose_name

log = logging.getLogger(__name__)

#: How long shutdown() waits for queued submissions to be stored before giving up (only an
#: unavailable store takes more than milliseconds).
SHUTDOWN_FLUSH_TIMEOUT = 60.0

threading._register_atexit(_exit.python_exit)


class BalsamExecutor(_cf.Executor):
    """An Executor that persists every task in a task store and runs it under a launcher.

    ``BalsamExecutor()`` with no arguments uses the site ``./.balsam_futures`` (or
    ``$BALSAM_FUTURES_SITE``), an embedded SQLite store there, and starts a local launcher
    with ``max_workers`` warm worker processes: a drop-in for ``ProcessPoolExecutor``.

    Args:
        max_workers: worker processes of the local launcher (default: CPUs of this machine).
        mp_context: workers are always fresh interpreters started by the launcher, as with
            the "spawn" start method, whatever the context ("fork" included; the launcher is
            a process of its own, so workers could not share this process's memory).
            Per-worker setup goes in ``initializer``.  The launcher itself is forked from
            this process when that is safe (one thread, no store file open; see
            docs/concepts.md, "Launcher"), which saves its start-up; a context whose start method is
            not "fork" (``get_context("spawn")``, "forkserver") makes it a fresh interpreter
            too.
        initializer, initargs: called in each worker before it runs tasks.  If it raises,
            the executor is broken, as ProcessPoolExecutor's: pending futures and later
            submits raise :class:`~balsam_futures.WorkerInitError`.
        max_tasks_per_child: tasks a worker runs before it is replaced.
        site: the site directory (database, data/, logs/).
        db_url: a database URL instead of the site's embedded SQLite file (default:
            ``$BALSAM_FUTURES_DB_URL``), e.g. ``postgresql://user@host/db``.
        launcher: start a local launcher (default: yes, except inside a running task);
            False leaves the tasks for launchers started elsewhere (``balsam-futures
            launcher``, a batch job).  An executor created inside a task joins that task's
            store and launchers, and the tasks it submits record the task as their parent.
        options: default per-task options (tags, retries, timeout...); see :meth:`options`.
        gpus: GPUs the local launcher gives its tasks, none shared (each task sees only
            its own through CUDA_VISIBLE_DEVICES / ZE_AFFINITY_MASK): a count or a list of
            ids.  Default: this machine's, detected.  The local launcher is one node with
            ``max_workers`` cores and these GPUs; tasks are packed onto it by their
            ``Resources``.
        mpi_launcher: how the local launcher starts tasks of several ranks: ``mpich``
            (hydra ``mpiexec``, the default; ``pip install mpich`` provides it), ``openmpi``,
            ``srun``, ``aprun``, ``pals`` or ``flux``.
        cache: the default of the ``cache=`` task option (memoization): True answers a
            call from the stored result of an identical call that succeeded, or follows one
            in flight, instead of running it again; see docs/workflows.md, "Caching".
    """

    def __init__(
        self,
        max_workers: int | None = None,
        mp_context: Any = None,
        initializer: Callable[..., Any] | None = None,
        initargs: tuple = (),
        *,
        max_tasks_per_child: int | None = None,
        site: str | os.PathLike[str] | None = None,
        db_url: str | None = None,
        launcher: bool | None = None,
        options: TaskOptions | None = None,
        gpus: int | Sequence[str] | None = None,
        mpi_launcher: str | None = None,
        cache: bool | str | None = None,
    ) -> None:
        self._pid = os.getpid()  # the process that owns it (see _check_process)
        if max_workers is None:
            max_workers = os.cpu_count() or 1
        elif max_workers <= 0:
            raise ValueError("max_workers must be greater than 0")
        if initializer is not None and not callable(initializer):
            raise TypeError("initializer must be a callable")
        if max_tasks_per_child is not None:
            if not isinstance(max_tasks_per_child, int) or isinstance(max_tasks_per_child, bool):
                raise TypeError("max_tasks_per_child must be a positive int")
            if max_tasks_per_child <= 0:
                raise ValueError("max_tasks_per_child must be >= 1")
        if options is not None and not isinstance(options, TaskOptions):
            raise TypeError("options must be a balsam_futures.TaskOptions")
        if mpi_launcher is not None:
            from .launcher.mpi import launcher_class

            launcher_class(mpi_launcher)  # an unknown name fails here, listing the valid ones
        self._max_workers = max_workers
        self._options = options or TaskOptions()
        if cache is not None:
            self._options = self._options.merged(cache=cache)
        init_blob = pack_initializer(initializer, initargs) if initializer else None

        self._site: Site | None = None
        inside = current_task()  # created by a running task: join its store, as its child
        self._parent_id = inside.id if inside is not None else None
        if launcher is None:
            launcher = inside is None
        if inside is not None and db_url is None and site is None:
            db_url, site = inside.db_url, inside.site
        db_url, self._site = resolve_store_url(db_url, site, with_site=site is not None)
        self._db_url = db_url
        self._store: SqlStore = open_store(db_url, listen="events")

        self._shutdown_lock = threading.Lock()
        self._shutdown = False
        self._broken: BaseException | None = None
        self._stopping_launcher = False
        self._registry = Registry()
        self._launcher: LauncherProcess | None = None
        if launcher:
            self._launcher = self._start_launcher(init_blob, max_tasks_per_child, gpus,
                                                  mpi_launcher, mp_context)
        self._watcher = Watcher(self._store, self._registry, self._store.latest_event_id(),
                                owner=self, launcher=self._launcher)
        self._submitter = Submitter(self._store, self._registry, on_written=self._written,
                                    on_broken=self._break)
        self._watcher.start()
        self._submitter.start()
        self._finisher: threading.Thread | None = None
        self._interrupted = False
        _exit.live_executors.add(self)

    def _written(self) -> None:
        """Tasks were stored (the writer thread): the watcher and the executor's own launcher
        look at the store now rather than at their next poll."""
        self._watcher.wake()
        if self._launcher is not None:
            self._launcher.nudge()

    def _start_launcher(self, init_blob, max_tasks_per_child, gpus,
                        mpi_launcher, mp_context) -> LauncherProcess:
        if gpus is None:
            gpu_ids = None  # this machine's, detected
        elif isinstance(gpus, int) and not isinstance(gpus, bool):
            if gpus < 0:
                raise ValueError(f"gpus must be >= 0, got {gpus}")
            gpu_ids = tuple(str(i) for i in range(gpus))
        else:
            gpu_ids = tuple(str(g) for g in gpus)
        node = local_node(self._max_workers, gpu_ids)
        self._local_nodes = NodePool([node])
        site = self._site or open_site(None)
        cfg = LauncherConfig(
            num_workers=self._max_workers,
            init_blob=init_blob,
            max_tasks_per_child=max_tasks_per_child,
            worker_env={"PYTHONPATH": worker_python_path()},
            site=str(site.path),
            gpu_ids=node.gpus,
            mpi_launcher=mpi_launcher,
            inherit_output=True,
        )
        # Register the launcher here, so this executor knows its id; the child heartbeats it.
        cfg.launcher_id = self._store.register_launcher(LauncherInfo.describe(
            [node], workers=self._max_workers, started_by="executor", job_mode="serial"))
        log_file = site.logs_dir / f"launcher-{cfg.launcher_id}.log"
        # Closed, so that the launcher may be a fork of this process (launcher/fork.py: no
        # SQLite file may be open across a fork); the next call opens another.
        self._store.release_connection()
        return LauncherProcess(self._db_url, cfg, log_file, mp_context=mp_context,
                               db_path=getattr(self._store, "path", None))

    # -- properties --------------------------------------------------------------------------

    @property
    def store(self) -> SqlStore:
        """The task store this executor writes to."""
        return self._store

    @property
    def site(self) -> Path | None:
        return self._site.path if self._site else None

    # -- submitting --------------------------------------------------------------------------

    def options(self, **changes: Any) -> _OptionsView:
        """Per-task options for the next submissions, apart from the callable's own kwargs.

        ``ex.options(tags={"exp": "a"}, max_retries=2, timeout=60).submit(fn, x, name=...)``
        Valid options: name, description, tags, data, resources, max_retries, timeout,
        auto_timeout_retry, priority, workdir, depends_on, allow_parent_failure, kind (the
        name its run time is learned under; see docs/mpi-gpus.md, "Claim order"), cache and
        cache_version (memoization), stage_in and stage_out (data staging; see
        docs/workflows.md).
        """
        return _OptionsView(self, self._options.merged(**changes))

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> BalsamFuture:
        return self._submit(self._options, fn, args, kwargs)

    submit.__doc__ = _cf.Executor.submit.__doc__

    def _in_forked_copy(self) -> bool:
        """Whether this process is a fork of the one that created the executor."""
        return os.getpid() != self._pid

    def _check_process(self) -> None:
        """Refuse a process forked from the one that created this executor (before taking
        any lock: one held by another thread at the fork stays held in the copy)."""
        if self._in_forked_copy():
            raise RuntimeError(
                f"this BalsamExecutor belongs to process {self._pid}; process {os.getpid()} "
                "is a fork of it, without its threads or its launcher: create an executor "
                "in this process (BalsamExecutor(), then attach() to reach the same tasks)")

    def _check_open(self) -> None:
        if self._broken is not None:
            # A fresh instance each time: re-raising one object grows its traceback.
            err = self._broken
            raise type(err)(*err.args) from err.__cause__
        if self._shutdown:
            raise RuntimeError("cannot schedule new futures after shutdown")
        if _exit.global_shutdown:
            raise RuntimeError("cannot schedule new futures after interpreter shutdown")

    def _submit(self, options: TaskOptions, fn, args, kwargs) -> BalsamFuture:
        self._check_process()
        with self._shutdown_lock:
            self._check_open()
        if isinstance(fn, ShellApp):  # stored as a Python task that runs the command
            # A name given (options or ShellApp's) must fit the store; the program's is cut.
            name = choose_name(options.name or fn.name, fn.default_name)
            spec = self._shell_spec(options, fn, None, args, kwargs, name)
            return self._store_specs([spec])[0]
        key = self._call_key(options, fn, args, kwargs) if options.cache else None
        spec = self._make_spec(options, "python", dump_callable(fn), args, kwargs,
                               choose_name(options.name, task_name(fn)), key)
        return self._store_specs([spec])[0]

    def _call_key(self, options: TaskOptions, fn, args, kwargs) -> str:
        from .cache_key import call_key

        return call_key(fn, args, kwargs, version=options.cache_version,
                        future_key=self._future_cache_key)

    def _future_cache_key(self, fut: Any) -> str:
        """The cache key of a future among a cached call's arguments: its task's own (the
        result it stands for is known only when that task ends)."""
        from .errors import CacheKeyError

        task_id = fut.task_id if isinstance(fut, BalsamFuture) else None
        key = self._store.cache_keys([task_id]).get(task_id) if task_id is not None else None
        if key is None:
            raise CacheKeyError(
                "cache=True: an argument is the future of a task"
                + (f" ({task_id})" if task_id is not None else "")
                + " that was not submitted with cache=, so its result cannot be part of the "
                "key before it runs; submit that task with cache=True too, or pass its result")
        return key

    def _shell_spec(self, options: TaskOptions, app: ShellApp, fn_bytes: bytes | None,
                    args: tuple, kwargs: dict, name: str) -> TaskSpec:
        """The TaskSpec of one run of ``app`` (its parameters checked here, at submit)."""
        fn, args = shell_call(app, args, kwargs)
        if (options.stage_in or options.stage_out) and app.workdir is not None:
            raise ValueError(
                f"ShellApp {app.default_name!r} names its own workdir template; stage_in and "
                "stage_out place files in the task's working directory, which the launcher "
                "must know before the run: give workdir= as a task option instead")
        key = None
        if options.cache:
            from .cache_key import shell_key

            key = shell_key(app, args[1], version=options.cache_version,
                            future_key=self._future_cache_key)
        if not options.description:
            # The command line, for `balsam-futures show` and `ls --json` (a parameter that
            # is a future is filled in only when the task runs).
            command = app.describe(args[1])
            if command:
                options = options.merged(description=command)
        return self._make_spec(options, "shell", fn_bytes or dump_callable(fn), args, {}, name,
                               key)

    def _make_spec(self, options: TaskOptions, kind: str, fn_bytes: bytes, args: tuple,
                   kwargs: dict, name: str, cache_key: str | None = None) -> TaskSpec:
        """Build one TaskSpec: futures among the arguments become dependencies whose results
        take their place when the task runs; ``options.depends_on`` adds more."""
        if self._launcher is not None:
            # A task the executor's own launcher can never run would wait forever (and
            # shutdown with it).  Say so now instead.
            reason = self._local_nodes.never_fits(options.resources)
            if reason is not None:
                raise ValueError(
                    f"this executor's local launcher cannot run the task: {reason} (one node "
                    f"with max_workers={self._max_workers} cores and "
                    f"{self._local_nodes.total_gpus} GPU(s)); pass more max_workers or gpus=, "
                    "or create it with launcher=False and run launchers in an allocation "
                    "with enough nodes")
        args, kwargs, parents = call_dependencies(self._store, args, kwargs, options.depends_on)
        if cache_key is not None and (options.stage_in or options.stage_out):
            from .cache_key import with_staging

            cache_key = with_staging(cache_key, options.stage_in, options.stage_out)
        return TaskSpec(kind, dump_call(fn_bytes, args, kwargs), options, name=name,
                        parent_id=self._parent_id, depends_on=tuple(parents),
                        cache_key=cache_key)

    def _store_specs(self, specs: list[TaskSpec]) -> list[BalsamFuture]:
        self._check_process()
        with self._shutdown_lock:
            self._check_open()
            return self._submitter.put(specs)

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every task submitted so far is in the store (see ``submission.py``).

        Returns False if ``timeout`` passed first (e.g. while the store is unreachable).
        """
        return self._submitter.flush(timeout=timeout)

    def map(self, fn: Callable[..., Any], *iterables: Iterable[Any], timeout: float | None = None,
            chunksize: int = 1) -> Iterator[Any]:
        """Like ``Executor.map``, but every task is stored in bulk before this returns.

        ``chunksize`` > 1 runs that many calls per task, as ProcessPoolExecutor does.

        ``fn`` may be a :class:`~balsam_futures.ShellApp`, which takes its parameters by
        keyword: give one iterable, of mappings of parameter names to values
        (``map(app, [{"x": 1, "y": 2}, ...])``), or, for an app with one parameter, of its
        values (``map(app, xs)``).  Each command is a task of its own (it needs its own working
        directory and ``job.out``), so ``chunksize`` changes nothing there, as with
        ThreadPoolExecutor.  Results, order and ``timeout`` are as for a callable.
        """
        return self._map(self._options, fn, iterables, timeout, chunksize)

    def _map(self, options: TaskOptions, fn, iterables, timeout, chunksize) -> Iterator[Any]:
        if chunksize < 1:
            raise ValueError("chunksize must be >= 1.")
        self._check_process()
        with self._shutdown_lock:
            self._check_open()
        end_time = None if timeout is None else timeout + time.monotonic()
        name, fn_bytes, calls, chunksize = map_calls(options, fn, iterables, chunksize)
        futs: list[BalsamFuture] = []
        while batch := list(itertools.islice(calls, MAP_BATCH)):
            if isinstance(fn, ShellApp):
                specs = [self._shell_spec(options, fn, fn_bytes, a, k, name) for a, k in batch]
            elif options.cache:
                stored = fn if chunksize == 1 else functools.partial(_process_chunk, fn)
                specs = [self._make_spec(options, "python", fn_bytes, a, k, name,
                                         self._call_key(options, stored, a, k))
                         for a, k in batch]
            else:
                specs = [self._make_spec(options, "python", fn_bytes, a, k, name)
                         for a, k in batch]
            futs.extend(self._store_specs(specs))
        self._submitter.flush()  # map returns once every task is in the store
        results = result_iterator(futs, end_time)
        if chunksize == 1:
            return results
        return itertools.chain.from_iterable(results)

    def tasks(self) -> TaskQuery:
        """Every task in this executor's store, as a lazy query (``.filter(...)``)."""
        return TaskQuery(self._store)

    # -- re-attaching ------------------------------------------------------------------------

    def attach(self, ids: Iterable[int] | None = None, *,
               tags: dict[str, str] | None = None) -> list[BalsamFuture]:
        """Standard futures for tasks already in the store, e.g. after a master restarted.

        Give task ``ids``, or ``tags`` that select a campaign (every task carrying all of
        them).  Finished tasks resolve at once; the others when they finish, under whichever
        launcher runs them.  Returns the futures in task id order.
        """
        if (ids is None) == (tags is None):
            raise TypeError("attach() takes task ids or tags=, not both or neither")
        self._check_process()
        with self._shutdown_lock:
            self._check_open()
        task_ids = sorted(set(ids)) if ids is not None else self._store.task_ids(tags)
        if ids is not None:
            missing = set(task_ids) - {e.task_id for e in self._store.task_outcomes(task_ids)}
            if missing:
                raise KeyError(f"no such task(s) in {self._store.display_url}: "
                               f"{', '.join(map(str, sorted(missing)[:10]))}")
        with self._registry.lock:
            futs = []
            for task_id in task_ids:
                fut = self._registry.futures.get(task_id)
                if fut is None:
                    fut = BalsamFuture(task_id, self._submitter)
                    self._registry.add([fut])
                futs.append(fut)
        # Registered first, read second: an event between the two resolves the future twice,
        # which apply_event ignores; the other order could miss it.
        by_id = {f._task_id: f for f in futs}
        for event in self._store.task_outcomes(task_ids):
            if event.state in FINAL or event.state is TaskState.RUNNING:
                apply_event(by_id[event.task_id], event.state, event.result, event.error)
        return futs

    # -- shutting down -----------------------------------------------------------------------

    def __exit__(self, exc_type, exc_val, exc_tb) -> bool:
        if exc_type is not None and issubclass(exc_type, KeyboardInterrupt):
            # Ctrl-C in the with block: stop now instead of waiting for every task.
            self._interrupt()
            return False
        return super().__exit__(exc_type, exc_val, exc_tb)

    def _interrupt(self) -> None:
        """Stop at once on Ctrl-C: store what was submitted (briefly), stop this executor's
        own launcher (its runs are killed and its tasks requeued), stop the threads.  The
        unfinished tasks stay in the store (READY or RESTART_READY) for a later attach()."""
        _exit.interrupt(self)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        if self._in_forked_copy():
            return  # see _check_process: the executor is its creator's to stop
        with self._shutdown_lock:
            self._shutdown = True
            if self._interrupted:
                return
        # Whatever wait says, what was submitted gets stored now: a process that exits right
        # after shutdown(wait=False) must not lose tasks still queued for the writer.
        if not self._submitter.flush(timeout=SHUTDOWN_FLUSH_TIMEOUT):
            log.error("shutdown: %d submitted task(s) could not be stored within %g s "
                      "(the store is unavailable); they are lost if this process exits",
                      len(self._submitter.queue), SHUTDOWN_FLUSH_TIMEOUT)
        if cancel_futures:
            self.cancel_pending()
        if wait:
            try:
                self._finish()
            except KeyboardInterrupt:
                self._interrupt()
                raise
        elif self._finisher is None:
            # Like ProcessPoolExecutor, the interpreter waits for work submitted to this
            # executor's own launcher; work left for other launchers does not hold it.
            self._finisher = threading.Thread(target=self._finish, name="balsam-futures-shutdown",
                                              daemon=self._launcher is None)
            self._finisher.start()

    shutdown.__doc__ = _cf.Executor.shutdown.__doc__

    def kill(self, tasks: Iterable[BalsamFuture | int]) -> list[int]:
        """Kill tasks by future or id, wherever they run (see :meth:`BalsamFuture.kill`).

        Returns the ids that were cancelled or flagged for their launcher to stop.
        """
        affected, ids = [], []
        for t in tasks:
            if isinstance(t, BalsamFuture):
                if t.kill() and t.task_id is not None:
                    affected.append(t.task_id)
            else:
                ids.append(int(t))
        return sorted(affected + self._store.kill(ids))

    def cancel_pending(self) -> list[int]:
        """Cancel every task of this executor that has not started: waiting, or claimed by a
        launcher (CLAIMED) that has not started it.  Returns their ids."""
        self._submitter.flush()
        pending = self._registry.pending()
        cancelled = set(self._store.cancel([f.task_id for f in pending]))
        for f in pending:
            if f.task_id in cancelled:
                _mark_cancelled(f)
        return sorted(cancelled)

    def _finish(self) -> None:
        with self._shutdown_lock:
            if getattr(self, "_finished", False):
                return
        self._submitter.close()
        if self._broken is None:
            if self._launcher is None and self._registry.futures:
                log.warning("waiting for %d task(s) run by other launchers; Ctrl-C leaves "
                            "them in the store", len(self._registry.futures))
            self._registry.wait_empty()
        with self._shutdown_lock:
            if getattr(self, "_finished", False):
                return
            self._finished = True
        self._stopping_launcher = True
        if self._launcher is not None:
            self._launcher.stop()
        self._watcher.stop()
        if self._watcher is not threading.current_thread():
            self._watcher.join()
        self._store.close()
        _exit.live_executors.discard(self)

    def _mark_broken(self, err: BaseException) -> None:
        with self._shutdown_lock:
            if self._broken is None:
                self._broken = err

    def _initializer_failed(self, err: BaseException) -> None:
        """The initializer raised in a worker of this executor's launcher (from the watcher):
        as ProcessPoolExecutor's pool, the executor is broken, and its launcher stops, which
        would otherwise fail every task it claims, other executors' too (they go back to the
        store)."""
        with self._shutdown_lock:
            if self._broken is not None:
                return
            self._broken = err  # submit() raises from now on
        log.error("the executor is broken: %s; its unfinished tasks stay in the store", err)
        self._stopping_launcher = True  # not a launcher death, for the watcher
        if self._launcher is not None:
            # Before the futures fail: once one raises, the launcher takes no more tasks.
            self._launcher.stop()
        self._break(err)

    def _break(self, err: BaseException) -> None:
        """A thread of this executor cannot go on: refuse new tasks, fail the pending ones
        (they stay in the store, for another executor to attach to)."""
        self._mark_broken(err)
        for fut in self._registry.pending():
            try:
                fut.set_exception(err)
            except _cf.InvalidStateError:
                pass


class _OptionsView:
    """``executor.options(...)``: the same executor with other per-task options."""

    def __init__(self, executor: BalsamExecutor, options: TaskOptions) -> None:
        self._executor = executor
        self._opts = options

    def options(self, **changes: Any) -> _OptionsView:
        return _OptionsView(self._executor, self._opts.merged(**changes))

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> BalsamFuture:
        return self._executor._submit(self._opts, fn, args, kwargs)

    def map(self, fn: Callable[..., Any], *iterables: Iterable[Any], timeout: float | None = None,
            chunksize: int = 1) -> Iterator[Any]:
        return self._executor._map(self._opts, fn, iterables, timeout, chunksize)
