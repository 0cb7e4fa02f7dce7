"""Every class of bad input gets a JSON 4xx that names the field, never a 500."""

from __future__ import annotations

import pytest

from tests.app.conftest import AUTH, make_alert

BODY_CASES = [
    ("wrong type", make_alert(message=42), 422, "message"),
    ("unknown enum", make_alert(priority="urgent"), 422, "priority"),
    ("missing field", {k: v for k, v in make_alert().items() if k != "region"}, 422, "region"),
    ("unknown field", make_alert(severity=3), 422, "severity"),
    ("empty message", make_alert(message=""), 422, "message"),
    ("type not a slug", make_alert(type="Flood Warning!"), 422, "type"),
    ("latitude out of range", make_alert(coordinates={"latitude": 91, "longitude": 0}), 422,
     "coordinates.latitude"),
    ("coordinates incomplete", make_alert(coordinates={"latitude": 1}), 422,
     "coordinates.longitude"),
    ("body is an array", [make_alert()], 422, "body"),
]


@pytest.mark.parametrize("case,body,status,field", BODY_CASES, ids=[c[0] for c in BODY_CASES])
def test_bad_bodies(client, case, body, status, field):
    resp = client.post("/api/v1/alerts", json=body, headers=AUTH)
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"] == "application/json"
    assert resp.json()["error"]["field"] == field


def test_body_that_is_not_json(client):
    resp = client.post("/api/v1/alerts", content=b'{"message": ', headers=AUTH)
    assert resp.status_code == 400
    assert resp.json()["error"] == {
        "code": "invalid_json", "message": "request body must be a JSON object", "field": "body"
    }


def test_oversized_body_is_refused_before_parsing(client):
    resp = client.post(
        "/api/v1/alerts", json=make_alert(message="x" * 40_000), headers=AUTH
    )
    assert resp.status_code == 413
    assert resp.json()["error"]["field"] == "body"


QUERY_CASES = [
    ("limit above 100", {"limit": 101}, "limit"),
    ("limit zero", {"limit": 0}, "limit"),
    ("limit not a number", {"limit": "ten"}, "limit"),
    ("negative page", {"page": -1}, "page"),
    ("page zero", {"page": 0}, "page"),
    ("unknown priority", {"priority": "urgent"}, "priority"),
    ("type not a slug", {"type": "A B"}, "type"),
    ("region too long", {"region": "r" * 65}, "region"),
    ("superscript digit", {"page": "\u00b2"}, "page"),
    ("five thousand digits", {"page": "9" * 5000}, "page"),
]


@pytest.mark.parametrize("case,params,field", QUERY_CASES, ids=[c[0] for c in QUERY_CASES])
def test_bad_list_parameters(client, case, params, field):
    resp = client.get("/api/v1/alerts", params=params)
    assert resp.status_code == 422, resp.text
    assert resp.json()["error"]["field"] == field


@pytest.mark.parametrize("path", ["/api/v1/alerts/not-a-uuid", "/api/v1/alerts/123"])
def test_malformed_id(client, path):
    resp = client.get(path)
    assert resp.status_code == 422
    assert resp.json()["error"]["field"] == "id"
    ack = client.post(path + "/acknowledge", headers=AUTH)
    assert ack.status_code == 422


def test_unknown_route_and_method_are_json(client):
    assert client.get("/nope").json()["error"]["code"] == "not_found"
    resp = client.delete("/api/v1/alerts")
    assert resp.status_code == 405
    assert resp.json()["error"]["field"] == "method"
