"""Resilience tests: the network guard (tests/net_guard.py) is on for every test here."""

import pytest


@pytest.fixture(autouse=True)
def _no_network(connects: list[str]) -> list[str]:
    return connects
