"""Create, read, list (with pagination edges) and acknowledge alerts."""

from __future__ import annotations

import uuid

from tests.app.conftest import AUTH, make_alert


def create(client, **overrides):
    resp = client.post("/api/v1/alerts", json=make_alert(**overrides), headers=AUTH)
    assert resp.status_code == 201, resp.text
    return resp.json()


def test_create_returns_the_stored_alert(client):
    resp = client.post(
        "/api/v1/alerts",
        json=make_alert(priority="critical", coordinates={"latitude": 51.5, "longitude": -0.12}),
        headers=AUTH,
    )
    assert resp.status_code == 201
    body = resp.json()
    assert body["priority"] == "critical"
    assert body["coordinates"] == {"latitude": 51.5, "longitude": -0.12}
    assert body["acknowledged"] is False and body["acknowledged_at"] is None
    assert resp.headers["location"] == f"/api/v1/alerts/{body['id']}"
    assert client.get(f"/api/v1/alerts/{body['id']}").json() == body


def test_get_unknown_id_is_404(client):
    resp = client.get(f"/api/v1/alerts/{uuid.uuid4()}")
    assert resp.status_code == 404
    assert resp.json()["error"]["field"] == "id"


def test_acknowledge_is_idempotent(client):
    alert = create(client)
    first = client.post(f"/api/v1/alerts/{alert['id']}/acknowledge", headers=AUTH)
    second = client.post(f"/api/v1/alerts/{alert['id']}/acknowledge", headers=AUTH)
    assert first.status_code == second.status_code == 200
    assert first.json()["acknowledged"] is True
    assert second.json()["acknowledged_at"] == first.json()["acknowledged_at"]


def test_acknowledge_unknown_id_is_404(client):
    resp = client.post(f"/api/v1/alerts/{uuid.uuid4()}/acknowledge", headers=AUTH)
    assert resp.status_code == 404


def test_pagination_edges(client):
    ids = [create(client, message=f"alert {i}")["id"] for i in range(25)]
    first = client.get("/api/v1/alerts").json()
    assert len(first["data"]) == 20  # default limit
    assert first["pagination"] == {
        "page": 1, "limit": 20, "total": 25, "total_pages": 2, "has_next": True, "has_prev": False,
    }
    assert [a["id"] for a in first["data"]] == ids[::-1][:20]  # newest first
    second = client.get("/api/v1/alerts", params={"page": 2}).json()
    assert [a["id"] for a in second["data"]] == ids[::-1][20:]
    assert second["pagination"]["has_next"] is False and second["pagination"]["has_prev"] is True
    beyond = client.get("/api/v1/alerts", params={"page": 3}).json()
    assert beyond["data"] == [] and beyond["pagination"]["total"] == 25
    everything = client.get("/api/v1/alerts", params={"limit": 100}).json()
    assert len(everything["data"]) == 25 and everything["pagination"]["total_pages"] == 1
    one = client.get("/api/v1/alerts", params={"limit": 1, "page": 25}).json()
    assert one["data"][0]["id"] == ids[0] and one["pagination"]["has_next"] is False


def test_empty_list(client):
    body = client.get("/api/v1/alerts").json()
    assert body == {"data": [], "pagination": {"page": 1, "limit": 20, "total": 0,
                                               "total_pages": 0, "has_next": False,
                                               "has_prev": False}}


def test_filters(client):
    create(client, type="fire", priority="critical", region="us-east")
    create(client, type="flood", priority="low", region="us-east")
    create(client, type="flood", priority="critical", region="eu-west")

    def ids(**params):
        return {(a["type"], a["priority"], a["region"])
                for a in client.get("/api/v1/alerts", params=params).json()["data"]}

    assert ids(type="flood") == {("flood", "low", "us-east"), ("flood", "critical", "eu-west")}
    assert ids(priority="critical", region="us-east") == {("fire", "critical", "us-east")}
    assert ids(type="fire", region="eu-west") == set()
