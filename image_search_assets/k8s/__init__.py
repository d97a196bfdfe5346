"""Running the platform on Kubernetes (GKE).

`job_config` turns the categories config into each step's Kubernetes config, `pending` diagnoses
step pods that are never scheduled (Dagster-free), `executor` is the k8s executor that acts on
that diagnosis, and `pools` writes the GPU pool limits. Nothing here imports dagster_k8s until
the k8s executor is actually selected.
"""
