"""A network guard for tests: any connect or name lookup outside 127.0.0.0/8 fails the test.

tests/conftest.py exposes it as the fixture `connects`; a module turns it on for all its tests
with `pytestmark = pytest.mark.usefixtures("connects")`.
"""

from __future__ import annotations

import ipaddress
import socket

import pytest


def _is_loopback(host: object) -> bool:
    try:
        return ipaddress.ip_address(str(host)) in ipaddress.ip_network("127.0.0.0/8")
    except ValueError:
        return False


@pytest.fixture
def connects(monkeypatch) -> list[str]:
    """Records every outgoing connect; fails the test on any target outside 127.0.0.0/8."""
    seen: list[str] = []

    def guard(real):
        def connect(self, address):
            host = address[0] if isinstance(address, tuple) else address
            if self.family in (socket.AF_INET, socket.AF_INET6):
                seen.append(str(host))
                if not _is_loopback(host):
                    pytest.fail(f"connection attempted to {host!r}")
            return real(self, address)

        return connect

    def getaddrinfo(host, *args, real=socket.getaddrinfo, **kwargs):
        if not _is_loopback(host):  # a real name lookup would query DNS servers
            pytest.fail(f"name lookup attempted for {host!r}")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", guard(socket.socket.connect))
    monkeypatch.setattr(socket.socket, "connect_ex", guard(socket.socket.connect_ex))
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return seen
