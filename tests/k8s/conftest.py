"""Fixtures for the k8s tests; the helper modules beside this file are imported by name."""

import sys
from pathlib import Path

import pytest
from dagster._core.test_utils import instance_for_test

sys.path.insert(0, str(Path(__file__).parent))

from k8s_fakes import write_kubeconfig  # noqa: E402
from k8s_harness import StepJobs, k8s_launcher_config  # noqa: E402


@pytest.fixture
def kubeconfig(tmp_path) -> str:
    return write_kubeconfig(tmp_path / "kubeconfig")


@pytest.fixture
def k8s_instance(kubeconfig):
    with instance_for_test(overrides={"run_launcher": k8s_launcher_config(kubeconfig)}) as inst:
        yield inst


@pytest.fixture
def step_jobs(k8s_instance, kubeconfig):
    return StepJobs(k8s_instance, kubeconfig)
