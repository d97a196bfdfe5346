"""Runs the GPU-steps job once on the instance at $DAGSTER_HOME (a separate run process)."""

import sys

import dagster as dg

from tests.gpu_budget.jobs import gpu_steps

if __name__ == "__main__":
    with dg.DagsterInstance.get() as instance:
        result = dg.execute_job(dg.reconstructable(gpu_steps), instance=instance)
        print(result.run_id)
        sys.exit(0 if result.success else 1)
