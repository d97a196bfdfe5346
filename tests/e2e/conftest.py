"""End-to-end tests: real webserver, daemon and browser processes on 127.0.0.1 (`-m e2e`)."""


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "e2e: starts real processes (dagster dev, Chromium); select with -m e2e"
    )
