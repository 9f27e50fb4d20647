"""Fixtures for the nesting unit tests (no daemon needed)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from virtmix.nesting.guests import open_site as load_site

HERE = Path(__file__).resolve().parent


UNIT_STORAGE = Path("/var/tmp/vmixt-nest-unit-storage")  # settings.storage_dir of the site


@pytest.fixture
def nested_site():
    yield load_site(HERE / "site_nested.yaml")
    shutil.rmtree(UNIT_STORAGE, ignore_errors=True)
