"""The API through Flask's test client, over a service on each store with the
admin token configured (a module that needs another service defines its own)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import pytest
from flask.testing import FlaskClient

from pocket.bootstrap import bootstrap
from pocket.config import Settings
from pocket.service import PocketService
from pocket.web import create_app
from tests.web.test_ledger_api import ADMIN_TOKEN


@pytest.fixture
def service(sql_settings: Settings) -> Iterator[PocketService]:
    pocket_service = bootstrap(replace(sql_settings, admin_token=ADMIN_TOKEN))
    yield pocket_service
    pocket_service.close()


@pytest.fixture
def client(service: PocketService) -> FlaskClient:
    return create_app(service).test_client()
