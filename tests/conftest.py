"""Test-session setup: smoke profile, and a private cache and figures folder per session.

Notebooks executed by nbmake inherit this environment, so they run at the ``smoke`` profile and
never touch the user's cache or the committed ``figures/``.
"""

import os
import tempfile
from pathlib import Path

import pytest

_SESSION_DIR = Path(tempfile.mkdtemp(prefix="stagewise-tests-"))
os.environ["STAGEWISE_PROFILE"] = "smoke"
os.environ.setdefault("STAGEWISE_CACHE", str(_SESSION_DIR / "cache"))
os.environ["STAGEWISE_FIGURES"] = str(_SESSION_DIR / "figures")
os.environ.setdefault("MPLBACKEND", "Agg")

REPO = Path(__file__).resolve().parents[1]


def pytest_collection_modifyitems(config, items):
    """With --nbmake, every notebook in notebooks/ must have been collected (none silently left out)."""
    if not config.getoption("--nbmake", default=False):
        return
    expected = {p.stem for p in (REPO / "notebooks").glob("[0-9][0-9]_*.py")}
    collected = {Path(str(item.fspath)).stem for item in items if str(item.fspath).endswith(".ipynb")}
    missing = expected - collected
    if missing:
        raise pytest.UsageError(f"nbmake did not collect notebooks {sorted(missing)}; run `make notebooks-ipynb` first")


@pytest.fixture
def tmp_cache(tmp_path, monkeypatch):
    """A fresh, empty artifact cache for one test."""
    monkeypatch.setenv("STAGEWISE_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"
