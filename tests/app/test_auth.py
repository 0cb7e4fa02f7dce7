"""Writes need the bearer token; reads don't."""

from __future__ import annotations

import pytest

from tests.app.conftest import AUTH, make_alert
from tests.support.app_server import TEST_TOKEN

BAD_HEADERS = {
    "missing": {},
    "wrong token": {"Authorization": "Bearer not-the-token-at-all-000"},
    "token prefix only": {"Authorization": f"Bearer {TEST_TOKEN[:-1]}"},
    "wrong scheme": {"Authorization": f"Basic {TEST_TOKEN}"},
    "empty bearer": {"Authorization": "Bearer"},
}


@pytest.mark.parametrize("headers", BAD_HEADERS.values(), ids=BAD_HEADERS.keys())
def test_create_without_valid_token_is_401(client, headers):
    resp = client.post("/api/v1/alerts", json=make_alert(), headers=headers)
    assert resp.status_code == 401
    assert resp.headers["www-authenticate"].startswith("Bearer")
    assert resp.json()["error"]["field"] == "Authorization"
    assert client.get("/api/v1/alerts").json()["pagination"]["total"] == 0


@pytest.mark.parametrize("headers", BAD_HEADERS.values(), ids=BAD_HEADERS.keys())
def test_acknowledge_without_valid_token_is_401(client, headers):
    alert = client.post("/api/v1/alerts", json=make_alert(), headers=AUTH).json()
    resp = client.post(f"/api/v1/alerts/{alert['id']}/acknowledge", headers=headers)
    assert resp.status_code == 401
    assert client.get(f"/api/v1/alerts/{alert['id']}").json()["acknowledged"] is False


def test_reads_are_public(client):
    assert client.get("/api/v1/alerts").status_code == 200
