import pytest

pytestmark = pytest.mark.integration


def test_healthz_answers_without_touching_services(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "checks": {"process": {"ok": True}}}


@pytest.mark.django_db
def test_readyz_is_green_with_a_real_worker_and_reports_it_missing_once_stopped(
    client, celery_worker_process
):
    response = client.get("/readyz")
    body = response.json()
    assert response.status_code == 200, body
    assert body["status"] == "ok"
    assert set(body["checks"]) == {"database", "broker", "workers"}
    assert body["checks"]["database"]["vendor"] == "postgresql"
    assert body["checks"]["broker"]["transport"] == "redis"
    assert celery_worker_process.nodename in body["checks"]["workers"]["workers"]

    celery_worker_process.stop()
    response = client.get("/readyz")
    body = response.json()
    assert response.status_code == 503
    assert body["status"] == "unavailable"
    assert body["checks"]["database"]["ok"] is True
    assert body["checks"]["broker"]["ok"] is True
    assert body["checks"]["workers"]["ok"] is False
    assert "no Celery worker answered" in body["checks"]["workers"]["error"]


def test_readyz_reports_an_unreachable_broker_by_name(client, settings, db):
    # Port 9 (discard) on loopback: nothing listens there, so the connection is refused.
    settings.CELERY_BROKER_URL = "redis://127.0.0.1:9/0"
    response = client.get("/readyz")
    body = response.json()
    assert response.status_code == 503
    assert body["checks"]["database"]["ok"] is True
    assert body["checks"]["broker"]["ok"] is False
    assert "Error" in body["checks"]["broker"]["error"]
