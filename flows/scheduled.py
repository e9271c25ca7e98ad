"""The compare flow behind plain parameters, for runs that Prefect starts on a schedule.

A deployment's parameters must be JSON: :func:`scheduled_compare` takes a config file's
path and/or overrides (dotted keys such as ``train.epochs`` or whole sections), builds
the :class:`~pipeline_core.config.RunConfig` the way ``seqlab run --config`` does and
runs the compare flow as its subflow, on the runner ``execution.runner`` names
(:func:`flows.compare.run_comparison`). ``deploy/prefect.yaml`` deploys
it with a cron schedule to a process work pool; ``seqlab schedule`` serves it from one
process (its parameters are the whole resolved config, as overrides).

A relative config path or data source is read from the working directory of the run:
the served process's, or the ``set_working_directory`` pull step of a deployment.
A model that fails fails the scheduled run (after the others finish), so that Prefect
shows it.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

from prefect import flow

from flows.compare import ComparisonResult, run_comparison
from pipeline_core.config import RunConfig, load_run_config

FLOW_NAME = "scheduled-compare"


def build_config(config: str | None, overrides: dict[str, Any] | None) -> RunConfig:
    """The run config of a scheduled run: the file (if any), then the overrides."""
    return load_run_config(config, overrides or {})


def summary(result: ComparisonResult) -> dict[str, Any]:
    """What the flow run returns: where MLflow holds the runs, each model's figures and
    what the model registry did."""
    rows = json.loads(result.leaderboard.to_json(orient="records"))  # NaN: null
    return {
        "parent_run_id": result.parent_run_id,
        "experiment": result.experiment,
        "tracking_uri": result.tracking_uri,
        "task": result.task,
        "leaderboard": [{k: v for k, v in row.items() if v is not None} for row in rows],
        "notes": list(result.notes),
        "registry": None if result.registry is None else asdict(result.registry),
    }


@flow(name=FLOW_NAME, log_prints=False)
def scheduled_compare(
    config: str | None = None, overrides: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Run one comparison from a config file path and/or overrides (JSON parameters)."""
    result = run_comparison(build_config(config, overrides))
    if result.failures:
        failed = "; ".join(f"{r.label}: {r.error}" for r in result.failures)
        raise RuntimeError(
            f"{len(result.failures)} model(s) failed (MLflow parent run "
            f"{result.parent_run_id}): {failed}"
        )
    return summary(result)
