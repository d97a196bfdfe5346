"""End-to-end tests: real webserver, daemon and browser processes on 127.0.0.1.

Every test here is in the end-to-end tier (`-m e2e`): tests/conftest.py marks this folder.
"""
