"""Where the compare flow's tasks run: ``config.execution.runner`` picks the Prefect task
runner (:func:`flows.compare.run_comparison` applies it with ``with_options``).

- ``sequential`` (the default): one model after another, in this process.
- ``threads``: every model at once on threads of this process
  (``ThreadPoolTaskRunner`` with two threads per model: one trains, the other's evaluate
  task waits for it). The GIL serialises the Python parts; torch's kernels release it.
- ``dask``: every model's training and evaluation a task on Dask, each on one worker
  process (``prefect_dask.DaskTaskRunner``): a ``LocalCluster`` of
  ``execution.dask_workers`` processes, one thread each, scheduler and dashboard on
  127.0.0.1 (the dashboard on a free port, never 8787), for the run's duration; or the
  running scheduler at ``execution.dask_address``.

In both parallel modes every model trains with one torch thread
(``train.num_threads = 1`` unless the config sets it, so the runs' params say so): two
models on two cores with two threads each would fight over them. On Dask the progress
bars are off: every worker process would draw its own on the same terminal.

The Dask workers report their task runs to the Prefect API the flow uses (Prefect sends
its settings with each task). That must be a real server: without ``PREFECT_API_URL``
each worker would start an ephemeral server of its own (20 s each), so a Dask run
without one starts a temporary server on 127.0.0.1 for its duration
(:func:`flows.server.prefect_api`, exported as ``PREFECT_API_URL`` before the cluster
starts, so spawned workers inherit it). A scheduler on another host needs more: its
workers must reach ``PREFECT_API_URL`` (not a 127.0.0.1 or localhost URL; checked) and
the MLflow tracking URI (an ``http(s)://`` server, or a SQLite file on a filesystem they
share; not checked), and import seqlab and the plugins the config names.

:func:`check_execution` runs before anything starts: a ``dask_address`` where no
scheduler answers within ``$SEQLAB_NETWORK_TIMEOUT`` seconds is one ``error:`` line.

Ctrl-C or SIGTERM reach this process only: the flow ends the comparison KILLED, a
LocalCluster's workers are killed on the way out (about 4 s), and
:func:`kill_orphaned_model_runs` ends the model runs they left RUNNING. A LocalCluster's
workers are spawned processes: a script that calls ``run_comparison`` with the Dask
runner needs the usual ``if __name__ == "__main__":`` guard.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner

from pipeline_core.config import RunConfig
from pipeline_core.errors import ConfigError
from pipeline_core.network import NetworkError, network_timeout_s

T = TypeVar("T")

#: train and evaluate
TASKS_PER_MODEL = 2

#: a LocalCluster that stays on this machine and leaves port 8787 alone
LOCAL_CLUSTER_KWARGS: dict[str, Any] = {
    "threads_per_worker": 1,
    "processes": True,
    "host": "127.0.0.1",
    "dashboard_address": "127.0.0.1:0",
}


def parallel(config: RunConfig) -> bool:
    return config.execution.runner != "sequential"


def parallel_config(config: RunConfig) -> RunConfig:
    """``config`` as the parallel runners train it (a copy; the given one is left as it
    is): ``train.num_threads = 1`` unless it sets a number itself, and on Dask no
    progress bars (each worker process would draw its own over the others')."""
    update: dict[str, Any] = {}
    if parallel(config) and config.train.num_threads is None:
        update["num_threads"] = 1
    if config.execution.runner == "dask" and config.train.progress:
        update["progress"] = False
    if not update:
        return config
    return config.model_copy(update={"train": config.train.model_copy(update=update)})


def local_cluster_kwargs(n_workers: int) -> dict[str, Any]:
    return {"n_workers": n_workers, **LOCAL_CLUSTER_KWARGS}


def task_runner_for(config: RunConfig) -> TaskRunner[Any]:
    """A fresh task runner for ``config.execution`` (see the module doc)."""
    execution = config.execution
    if execution.runner == "threads":
        # two tasks per model: an evaluate task holds its thread while it waits for its
        # model's training, so len(models) threads would start only half the models
        return ThreadPoolTaskRunner(max_workers=max(1, TASKS_PER_MODEL * len(config.models)))
    if execution.runner == "dask":
        from prefect_dask import DaskTaskRunner

        if execution.dask_address:
            return DaskTaskRunner(address=execution.dask_address)
        return DaskTaskRunner(
            cluster_class="distributed.LocalCluster",
            cluster_kwargs=local_cluster_kwargs(execution.dask_workers),
        )
    return ThreadPoolTaskRunner(max_workers=1)


#: environment Dask sets before it spawns a worker that seqlab's workers go without:
#: with ``MALLOC_TRIM_THRESHOLD_`` set, glibc serves every allocation over 128 KiB by a
#: fresh mmap, torch's tensors included (twice the page faults; two LSTMs training in
#: parallel measured 15-25% slower with it)
DROPPED_WORKER_ENV = ("MALLOC_TRIM_THRESHOLD_",)


@contextlib.contextmanager
def dask_settings(level: int = logging.ERROR) -> Iterator[None]:
    """Dask as a comparison runs it, for the block:

    - errors only from Dask in this process: its scheduler and nannies run here and log
      every worker's start and stop (and, on Ctrl-C, the killing of the workers still
      busy); nothing from the workers of a LocalCluster started in the block (told
      through their environment: they set up logging on import), which log the tasks it
      cancels and, when Ctrl-C closes the scheduler first, a failed heartbeat with a
      traceback. A task that fails reaches seqlab through Prefect and is on the
      leaderboard; a worker that dies is reported by the scheduler here;
    - those workers keep Dask's one OpenMP/MKL thread but not its malloc setting
      (:data:`DROPPED_WORKER_ENV`)."""
    import dask

    spawn_env = dict(dask.config.get("distributed.nanny.pre-spawn-environ", default={}) or {})
    for key in DROPPED_WORKER_ENV:
        spawn_env.pop(key, None)
    spawn_env["DASK_LOGGING__DISTRIBUTED"] = "critical"
    logger = logging.getLogger("distributed")
    before = logger.level
    logger.setLevel(max(level, logger.getEffectiveLevel()))
    try:
        with dask.config.set({"distributed.nanny.pre-spawn-environ": spawn_env}):
            yield
    finally:
        logger.setLevel(before)


async def _scheduler_identity(address: str, timeout: float) -> dict[str, Any]:
    from distributed.comm import connect

    comm = await connect(address, timeout=timeout)
    try:
        await comm.write({"op": "identity", "reply": True})
        reply = await comm.read()
    finally:
        await comm.close()
    return reply if isinstance(reply, dict) else {}


def _run_async(make: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """``asyncio.run`` of a coroutine, on a thread of its own when this one already runs
    an event loop (a notebook)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(make())
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(lambda: asyncio.run(make())).result()


def check_dask_scheduler(address: str, timeout: float | None = None) -> None:
    """A Dask scheduler answers at ``address`` within ``timeout`` seconds (default
    ``$SEQLAB_NETWORK_TIMEOUT``), or a one-line :class:`NetworkError`."""
    seconds = timeout if timeout is not None else network_timeout_s()
    shown = f"{seconds:g}"
    try:
        reply = _run_async(lambda: asyncio.wait_for(_scheduler_identity(address, seconds), seconds))
    except ValueError as err:  # an address Dask cannot parse
        raise ConfigError(f"--dask-address {address}: not a Dask address ({err})") from None
    except (OSError, TimeoutError, EOFError):
        raise NetworkError(
            f"--dask-address {address}: no Dask scheduler answered within {shown} s"
        ) from None
    except Exception:  # a server that speaks another protocol (HTTP, a proxy...)
        reply = {}
    if reply.get("type") != "Scheduler":
        raise NetworkError(
            f"--dask-address {address}: no Dask scheduler answered within {shown} s "
            "(something else listens there)"
        )


def is_loopback(host: str) -> bool:
    host = host.strip("[]").lower()
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def address_host(address: str) -> str:
    """The host of a Dask address (``tcp://10.0.0.5:8786`` -> ``10.0.0.5``)."""
    from distributed.comm.addressing import parse_address, parse_host_port

    try:
        _, location = parse_address(address)
        host, _ = parse_host_port(location)
    except ValueError as err:
        raise ConfigError(f"--dask-address {address}: not a Dask address ({err})") from None
    return str(host)


def url_host(url: str) -> str:
    from urllib.parse import urlparse

    return urlparse(url).hostname or ""


def check_execution(config: RunConfig) -> None:
    """Before anything runs: a ``dask_address`` must answer, and a scheduler on another
    host needs a Prefect API its workers can reach (``PREFECT_API_URL``, not loopback)."""
    execution = config.execution
    if execution.runner != "dask" or not execution.dask_address:
        return
    address = execution.dask_address
    if not is_loopback(address_host(address)):
        from flows.server import configured_api_url

        api = configured_api_url()
        if not api or is_loopback(url_host(api)):
            raise ConfigError(
                f"--dask-address {address}: the workers of a scheduler on another host "
                "report to the Prefect API: set PREFECT_API_URL to a Prefect server they "
                f"can reach (got {api or 'none: a temporary server on 127.0.0.1'})"
            )
    check_dask_scheduler(address)


def kill_orphaned_model_runs(config: RunConfig) -> list[str]:
    """After Ctrl-C or SIGTERM in a Dask run: the model runs this process's comparisons
    left RUNNING, marked KILLED; their ids. The interrupt reaches this process only: the
    flow marks the parent KILLED, but a worker stopped mid-task (a LocalCluster's are
    killed on the way out) never ends its model's run. A remote worker may still finish
    the task it had begun; its run stays KILLED."""
    from pipeline_core.experiment import experiment_name
    from pipeline_core.runs import process_tags
    from pipeline_core.tracking import RunRef, get_tracker

    tracker = get_tracker(config.tracking.tracking_uri)
    found = tracker.client.get_experiment_by_name(
        experiment_name(config.data, config.tracking, config.task)
    )
    if found is None:
        return []
    mine = " and ".join(f"tags.`{k}` = '{v}'" for k, v in process_tags().items())
    parents = tracker.client.search_runs(
        [found.experiment_id], filter_string=f"tags.`seqlab.kind` = 'compare' and {mine}"
    )
    killed = []
    for parent in parents:
        for child in tracker.child_runs(RunRef(parent.info.run_id, found.experiment_id)):
            if child.info.status == "RUNNING":
                tracker.kill(RunRef(child.info.run_id, found.experiment_id))
                killed.append(child.info.run_id)
    return killed
