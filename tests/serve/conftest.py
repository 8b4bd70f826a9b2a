"""Shared by the service tests."""

import pytest
from fastapi.testclient import TestClient

from rsretrieve.serve.app import create_app


@pytest.fixture(scope="module")
def client(small_workspace):
    """The service over the shared small workspace (one per test module)."""
    with TestClient(create_app(small_workspace)) as c:
        yield c
