"""Shared pytest setup: CPU only, quiet logs, paths to the shared demo data."""
import os
import pathlib

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import pytest  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]
SINTEL_DEMO = REPO.parent / "shared" / "data" / "sintel_demo"


@pytest.fixture(scope="session")
def sintel_demo_dir():
    if not SINTEL_DEMO.is_dir():
        pytest.skip(f"Sintel demo frames not found at {SINTEL_DEMO}")
    return SINTEL_DEMO
