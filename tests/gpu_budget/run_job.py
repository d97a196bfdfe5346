"""Runs one GPU-steps job (default gpu_steps) once on the instance at $DAGSTER_HOME, in this
separate process as a production run worker would; prints the run id last."""

import sys

import dagster as dg

from tests.gpu_budget import jobs

if __name__ == "__main__":
    job = getattr(jobs, sys.argv[1] if len(sys.argv) > 1 else "gpu_steps")
    with dg.DagsterInstance.get() as instance:
        result = dg.execute_job(dg.reconstructable(job), instance=instance)
        print(result.run_id)
        sys.exit(0 if result.success else 1)
