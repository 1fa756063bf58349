"""Shared fixtures for the autoscaler tests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="session")
def vpa_golden() -> dict[str, Any]:
    """Numbers produced by VPA's own histogram code under Go (see the file's ``_note``)."""
    return json.loads((DATA / "vpa_golden.json").read_text())
