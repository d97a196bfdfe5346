"""Running the platform on Kubernetes (GKE).

`job_config` turns the categories config into each step's Kubernetes config, `pending` diagnoses
step pods that are never scheduled (Dagster-free), `step_handler` launches the step Jobs and
acts on that diagnosis, `executor` is the k8s executor around it, and `pools` writes the GPU
pool limits. Nothing here imports dagster_k8s until
the k8s executor is actually selected.
"""
