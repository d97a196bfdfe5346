"""Renders the daily job's step Jobs for the config IMAGE_SEARCH_CONFIG names, normalised.

Run as a script (a fresh process: `defs` reads the config when it is imported); it prints one
JSON object, {step key: Job manifest}, with what differs between two runs of the same config
(the run id, the Job's name, the compressed step arguments) replaced by fixed text.
`--write PATH` keeps the representative steps' Jobs and every step's digest in PATH: the
fixture single_type_jobs.json was written so, by the renderer as it was before GPU options
existed, and test_gpu_options.py holds today's renderer to it.
"""

from __future__ import annotations

import hashlib
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

# The steps whose whole Job the fixture keeps: one per GPU count, both stages, and CPU steps.
KEPT = ("tops__detections", "pants__embeddings", "hats__detections", "new_products")
ARGS_ENV = "DAGSTER_COMPRESSED_EXECUTE_STEP_ARGS"


def normalise(job: dict, run_id: str) -> dict:
    text = json.dumps(job, sort_keys=True).replace(run_id, "RUN-ID")
    job = json.loads(text)
    for meta in (job["metadata"], job["spec"]["template"]["metadata"]):
        meta["name"] = "dagster-step-NAME"
    for container in job["spec"]["template"]["spec"]["containers"]:
        for env in container.get("env", []):
            if env["name"] == ARGS_ENV:
                env["value"] = "ARGS"
    return job


def render() -> dict[str, dict]:
    from dagster._core.test_utils import instance_for_test
    from k8s_fakes import write_kubeconfig
    from k8s_harness import StepJobs, k8s_launcher_config
    from k8s_schemas import as_manifest

    with tempfile.TemporaryDirectory() as tmp:
        kubeconfig = write_kubeconfig(Path(tmp) / "kubeconfig")
        overrides = {"run_launcher": k8s_launcher_config(kubeconfig)}
        with instance_for_test(overrides=overrides) as instance:
            jobs = StepJobs(instance, kubeconfig)
            rendered = {key: as_manifest(jobs.launch(key)) for key in jobs.step_keys}
            return {key: normalise(job, jobs.run.run_id) for key, job in rendered.items()}


def digest(job: dict) -> str:
    return hashlib.sha256(json.dumps(job, sort_keys=True).encode()).hexdigest()


def fixture(rendered: dict[str, dict]) -> dict:
    return {
        "jobs": {key: rendered[key] for key in KEPT},
        "sha256": {key: digest(job) for key, job in sorted(rendered.items())},
    }


if __name__ == "__main__":
    result = render()
    if sys.argv[1:2] == ["--write"]:
        Path(sys.argv[2]).write_text(json.dumps(fixture(result), sort_keys=True, indent=1) + "\n")
    else:
        json.dump(result, sys.stdout, sort_keys=True)
