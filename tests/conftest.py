"""Shared fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def repo_root() -> Path:
    """The repository checkout (for checked-in generated files)."""
    return REPO


@pytest.fixture
def write_config(tmp_path: Path):  # type: ignore[no-untyped-def]
    """Write a YAML config text into tmp_path and return its path."""

    def write(text: str, name: str = "alertbridge.yml") -> Path:
        path = tmp_path / name
        path.write_text(text, encoding="utf-8")
        return path

    return write


@pytest.fixture(scope="session")
def pg_cluster():  # type: ignore[no-untyped-def]
    """The tests' own PostgreSQL cluster (tests/pg.py), started at its first use."""
    from tests.pg import shared

    return shared()
