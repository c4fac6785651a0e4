"""Webhook URLs cannot reach the platform's own network (server-side request forgery guard)."""

from __future__ import annotations

import http.server
import socket
import threading
import urllib.parse
from collections.abc import Iterator
from typing import Any

import pytest

from config.api import ApplicationError
from governance.roles import Role
from reenactment.models import RenderJob, WebhookDelivery, WebhookDeliveryStatus, WebhookEndpoint
from reenactment.services.webhooks import (
    WebhookAttemptFailed,
    webhook_delivery_attempt,
    webhook_endpoint_create,
    webhook_url_refusal,
)
from tests.factories import UserFactory
from tests.reenactment.test_job_flow import submit


class _Counter(http.server.BaseHTTPRequestHandler):
    hits: list[str] = []
    hosts: list[str] = []

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        self.hits.append(self.path)
        self.hosts.append(self.headers["Host"])
        if self.path == "/redirect":
            self.send_response(307)
            self.send_header("Location", "/inside")
        else:
            self.send_response(204)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def local_server() -> Iterator[str]:
    _Counter.hits, _Counter.hosts = [], []
    server = http.server.HTTPServer(("127.0.0.1", 0), _Counter)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8000/hook",
        "http://localhost/hook",
        "http://10.1.2.3/hook",
        "http://192.168.0.10/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]/hook",
        "http://[fd00::1]/hook",
        "http://0.0.0.0/hook",
    ],
)
@pytest.mark.django_db
def test_non_public_addresses_are_refused_at_registration(settings: Any, url: str) -> None:
    settings.WEBHOOKS_ALLOW_PRIVATE_ADDRESSES = False
    owner = UserFactory(roles=[Role.REQUESTER])
    with pytest.raises(ApplicationError) as caught:
        webhook_endpoint_create(owner=owner, url=url, acting_user=owner)
    assert caught.value.code == "private_url"
    assert not WebhookEndpoint.objects.exists()


@pytest.mark.django_db
def test_public_addresses_pass_and_the_switch_allows_local_receivers(settings: Any) -> None:
    settings.WEBHOOKS_ALLOW_PRIVATE_ADDRESSES = False
    assert webhook_url_refusal("https://93.184.216.34/hook") is None
    assert webhook_url_refusal("https://[2606:4700::1111]/hook") is None
    settings.WEBHOOKS_ALLOW_PRIVATE_ADDRESSES = True
    assert webhook_url_refusal("http://127.0.0.1/hook") is None


def _delivery(platform: Any, url: str) -> WebhookDelivery:
    owner = platform.user(Role.REQUESTER)
    endpoint = webhook_endpoint_create(owner=owner, url=url, acting_user=owner)
    job = RenderJob.objects.get(pk=submit(platform)["id"])
    # Submitting created the job's own deliveries (pending, for the worker we do not run).
    WebhookDelivery.objects.all().delete()
    return WebhookDelivery.objects.create(endpoint=endpoint, job=job, event="job.test", payload={})


def test_a_host_that_became_private_is_refused_before_the_attempt(
    platform: Any, settings: Any, local_server: str
) -> None:
    delivery = _delivery(platform, f"{local_server}/hook")
    settings.WEBHOOKS_ALLOW_PRIVATE_ADDRESSES = False
    webhook_delivery_attempt(delivery_id=delivery.pk, final=False)  # refused: no retry raised
    delivery.refresh_from_db()
    assert delivery.status == WebhookDeliveryStatus.FAILED
    assert delivery.last_error.startswith("refused: 127.0.0.1")
    assert _Counter.hits == []


def test_redirects_are_not_followed(platform: Any, local_server: str) -> None:
    delivery = _delivery(platform, f"{local_server}/redirect")
    webhook_delivery_attempt(delivery_id=delivery.pk, final=True)
    delivery.refresh_from_db()
    assert delivery.status == WebhookDeliveryStatus.FAILED
    assert delivery.last_status_code == 307
    assert _Counter.hits == ["/redirect"]


def _rebinding_dns(monkeypatch: pytest.MonkeyPatch, answers: list[str]) -> list[str]:
    """``hooks.invalid`` resolves to ``answers`` in turn (the last one from then on)."""
    lookups: list[str] = []
    real_getaddrinfo = socket.getaddrinfo

    def getaddrinfo(host: str, *args: Any, **kwargs: Any) -> Any:
        if host != "hooks.invalid":
            return real_getaddrinfo(host, *args, **kwargs)
        lookups.append(host)
        address = answers[min(len(lookups), len(answers)) - 1]
        return [(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (address, 0))]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return lookups


def test_an_attempt_connects_to_the_address_it_resolved(
    platform: Any, local_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = urllib.parse.urlsplit(local_server).port
    # A second lookup would get a TEST-NET address that nothing answers on.
    lookups = _rebinding_dns(monkeypatch, ["127.0.0.1", "192.0.2.1"])
    delivery = _delivery(platform, f"http://hooks.invalid:{port}/hook")
    webhook_delivery_attempt(delivery_id=delivery.pk, final=True)
    delivery.refresh_from_db()
    assert delivery.status == WebhookDeliveryStatus.DELIVERED, delivery.last_error
    assert lookups == ["hooks.invalid"]
    # The request still names the URL's host (virtual hosting; TLS checks the certificate for it).
    assert _Counter.hits == ["/hook"] and _Counter.hosts == [f"hooks.invalid:{port}"]


def test_dns_rebinding_cannot_turn_a_checked_name_inwards(
    platform: Any, settings: Any, local_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The check saw a public address; a later answer of 127.0.0.1 is never connected to."""
    port = urllib.parse.urlsplit(local_server).port
    delivery = _delivery(platform, f"http://hooks.invalid:{port}/hook")
    settings.WEBHOOKS_ALLOW_PRIVATE_ADDRESSES = False
    lookups = _rebinding_dns(monkeypatch, ["93.184.216.34", "127.0.0.1"])
    dialled: list[tuple[str, int]] = []

    def create_connection(address: tuple[str, int], *args: Any, **kwargs: Any) -> Any:
        # Nothing leaves the test machine: the public address only records the dial.
        dialled.append(address)
        raise ConnectionRefusedError("test network: refused")

    monkeypatch.setattr(socket, "create_connection", create_connection)
    with pytest.raises(WebhookAttemptFailed):
        webhook_delivery_attempt(delivery_id=delivery.pk, final=False)
    assert lookups == ["hooks.invalid"]
    assert dialled == [("93.184.216.34", port)]
    assert _Counter.hits == []
    delivery.refresh_from_db()
    assert delivery.status == WebhookDeliveryStatus.PENDING and "refused" in delivery.last_error


def test_a_name_that_does_not_resolve_fails_the_attempt_and_is_retried(
    platform: Any, settings: Any
) -> None:
    delivery = _delivery(platform, "http://no-such-host.invalid/hook")
    settings.WEBHOOKS_ALLOW_PRIVATE_ADDRESSES = False
    with pytest.raises(WebhookAttemptFailed):
        webhook_delivery_attempt(delivery_id=delivery.pk, final=False)
    delivery.refresh_from_db()
    assert delivery.status == WebhookDeliveryStatus.PENDING and delivery.attempts == 1
    assert "no-such-host.invalid" in delivery.last_error
