"""Webhooks: a requester's registered URLs receive their jobs' state changes.

Each event becomes one ``WebhookDelivery`` per active endpoint, created in the transaction of the
state change and sent after commit by the ``reenactment.webhook_deliver`` task. The body is JSON;
``X-Reenactment-Signature: sha256=<hex>`` is the HMAC-SHA256 of ``<timestamp>.<body>`` with the
endpoint's secret, and ``X-Reenactment-Timestamp`` carries the timestamp, so receivers can reject
replays. Failed attempts are retried with exponential backoff; every attempt is logged on the
delivery.

Server-side request forgery: unless ``WEBHOOKS_ALLOW_PRIVATE_ADDRESSES`` is set (the single-host
demo and the tests do, for receivers on localhost), a URL whose host is, or resolves to, a
loopback, private, link-local, multicast or otherwise non-public address is refused when it is
registered and again before every attempt (DNS answers change), and redirects are never followed,
so a registered URL cannot be turned against the platform's own network. Each attempt resolves
the name once and connects to the addresses it checked (TLS still verifies the certificate for
the name, and ``Host`` still carries it), so a DNS answer that changes between the check and the
connection (DNS rebinding) cannot redirect it. Where an HTTP(S) proxy from the environment
applies to the URL, the proxy resolves the name and the connection goes to the proxy.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import http.client
import ipaddress
import json
import secrets
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from config.api import ApplicationError
from governance.audit_codes import AuditAction
from governance.models import User
from governance.services.audit import audit_event_record
from reenactment.models import (
    RenderJob,
    WebhookDelivery,
    WebhookDeliveryStatus,
    WebhookEndpoint,
)

SIGNATURE_HEADER = "X-Reenactment-Signature"
TIMESTAMP_HEADER = "X-Reenactment-Timestamp"
EVENT_HEADER = "X-Reenactment-Event"


def webhook_signature(*, secret: str, timestamp: str, body: bytes) -> str:
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return f"sha256={mac.hexdigest()}"


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A redirect is answered as the failure it is: it could point anywhere, inside included."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # type: ignore[no-untyped-def]
        return None


def _host_addresses(host: str) -> list[str]:
    """``host``'s addresses: an IP literal as written, a name resolved once (empty if it fails)."""
    try:
        return [str(ipaddress.ip_address(host))]
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except OSError:
        return []
    addresses: list[str] = []
    for info in infos:
        address = str(info[4][0])
        if address not in addresses:
            addresses.append(address)
    return addresses


def _addresses_refusal(host: str, addresses: list[str]) -> str | None:
    if settings.WEBHOOKS_ALLOW_PRIVATE_ADDRESSES:
        return None
    if host == "localhost" or host.endswith(".localhost"):
        return f"{host} is the local machine"
    for address in addresses:
        # IPv6 scope ids ("fe80::1%eth0") are not part of the address.
        if not ipaddress.ip_address(address.split("%")[0]).is_global:
            return f"{host} is, or resolves to, {address}, which is not a public address"
    return None


def webhook_url_refusal(url: str) -> str | None:
    """Why ``url`` may not receive webhooks (a non-public address), or ``None``.

    IP literals and ``localhost`` are judged as written; other names are resolved (a name that
    does not resolve is not refused here: the attempt fails).
    """
    if settings.WEBHOOKS_ALLOW_PRIVATE_ADDRESSES:
        return None
    host = urllib.parse.urlsplit(url).hostname or ""
    return _addresses_refusal(host, _host_addresses(host))


def _connect_to(addresses: list[str], address: tuple[str, int], *args: Any) -> socket.socket:
    """``socket.create_connection`` to the checked ``addresses`` instead of a new lookup."""
    error: OSError = OSError(f"{address[0]} did not resolve to any address")
    for candidate in addresses:
        try:
            return socket.create_connection((candidate, address[1]), *args)
        except OSError as exc:
            error = exc
    raise error


def _pinned(connection_class: type[http.client.HTTPConnection], addresses: list[str]) -> Any:
    """``connection_class`` whose TCP connection goes to ``addresses`` (TLS checks the name)."""

    def connection(*args: Any, **kwargs: Any) -> http.client.HTTPConnection:
        instance = connection_class(*args, **kwargs)
        # http.client's one hook for how the socket is opened; everything else is unchanged.
        instance._create_connection = functools.partial(_connect_to, addresses)  # type: ignore[attr-defined]
        return instance

    return connection


class _PinnedHTTPHandler(urllib.request.HTTPHandler):
    def __init__(self, addresses: list[str]) -> None:
        super().__init__()
        self.addresses = addresses

    def http_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(_pinned(http.client.HTTPConnection, self.addresses), req)


class _PinnedHTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self, addresses: list[str]) -> None:
        super().__init__()
        self.addresses = addresses

    def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        connection = _pinned(http.client.HTTPSConnection, self.addresses)
        return self.do_open(connection, req, context=self._context)


def _webhook_opener(url: str) -> tuple[urllib.request.OpenerDirector | None, str | None]:
    """An opener for one attempt at ``url``, or ``None`` and why the URL is refused.

    The name is resolved once here; the opener connects to the addresses that were checked.
    """
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    proxies = urllib.request.getproxies()
    if parts.scheme in proxies and not urllib.request.proxy_bypass(host):
        # The proxy connects; what the name resolves to here is only checked.
        refusal = webhook_url_refusal(url)
        return (None if refusal else urllib.request.build_opener(_NoRedirects)), refusal
    addresses = _host_addresses(host)
    refusal = _addresses_refusal(host, addresses)
    if refusal is not None:
        return None, refusal
    pinned = (_PinnedHTTPHandler(addresses), _PinnedHTTPSHandler(addresses))
    return urllib.request.build_opener(_NoRedirects, *pinned), None


def webhook_endpoint_create(*, owner: User, url: str, acting_user: User) -> WebhookEndpoint:
    """Register ``url``; the returned endpoint's ``secret`` is shown to the owner once.

    The URL is checked before the transaction opens: the address check may wait on DNS.
    """
    if not url.startswith(("https://", "http://")):
        raise ApplicationError("A webhook URL must be http(s).", code="invalid_url")
    if not urllib.parse.urlsplit(url).hostname:
        raise ApplicationError("A webhook URL must name a host.", code="invalid_url")
    if url.startswith("http://") and not settings.WEBHOOKS_ALLOW_HTTP:
        raise ApplicationError(
            "Webhook URLs must use https in this deployment.", code="insecure_url"
        )
    refusal = webhook_url_refusal(url)
    if refusal is not None:
        raise ApplicationError(
            f"Webhook URLs must reach a public address: {refusal}.", code="private_url"
        )
    with transaction.atomic(durable=True):
        endpoint = WebhookEndpoint.objects.create(
            owner=owner, url=url, secret=secrets.token_hex(32)
        )
        audit_event_record(
            actor=acting_user,
            action=AuditAction.WEBHOOK_ENDPOINT_CREATE,
            target_type="reenactment.webhookendpoint",
            target_id=endpoint.pk,
            payload={"url": url, "owner_id": owner.pk},
        )
    return endpoint


@transaction.atomic(durable=True)
def webhook_endpoint_disable(*, endpoint: WebhookEndpoint, acting_user: User) -> None:
    endpoint.is_active = False
    endpoint.save(update_fields=["is_active"])
    audit_event_record(
        actor=acting_user,
        action=AuditAction.WEBHOOK_ENDPOINT_DISABLE,
        target_type="reenactment.webhookendpoint",
        target_id=endpoint.pk,
    )


def _event_payload(job: RenderJob, event: str) -> dict[str, Any]:
    return {
        "event": event,
        "job": {
            "id": job.pk,
            "status": job.status,
            "status_reason": job.status_reason,
            "progress_percent": job.progress_percent,
            "output_sha256": job.output_sha256 or None,
        },
        "occurred_at": timezone.now().isoformat(),
    }


def webhook_events_enqueue(*, job: RenderJob, event: str) -> list[int]:
    """Create deliveries for the job owner's active endpoints; send them after commit."""
    from reenactment.tasks import webhook_deliver_task

    ids = []
    for endpoint in WebhookEndpoint.objects.filter(owner_id=job.requested_by_id, is_active=True):
        delivery = WebhookDelivery.objects.create(
            endpoint=endpoint, job=job, event=event, payload=_event_payload(job, event)
        )
        ids.append(delivery.pk)
    for delivery_id in ids:
        transaction.on_commit(lambda d=delivery_id: webhook_deliver_task.delay(d))
    return ids


class WebhookAttemptFailed(Exception):  # noqa: N818 - an outcome the task retries on
    pass


def webhook_delivery_attempt(*, delivery_id: int, final: bool) -> None:
    """POST one delivery; raise ``WebhookAttemptFailed`` when it should be retried."""
    delivery = WebhookDelivery.objects.select_related("endpoint").filter(pk=delivery_id).first()
    if delivery is None or delivery.status != WebhookDeliveryStatus.PENDING:
        return
    body = json.dumps(delivery.payload, sort_keys=True, separators=(",", ":")).encode()
    timestamp = str(int(time.time()))
    request = urllib.request.Request(  # noqa: S310 - scheme checked at registration
        delivery.endpoint.url,
        data=body,
        method="POST",
        headers={
            "Content-Type": "application/json",
            "User-Agent": f"{settings.PRODUCT_NAME}/{settings.PRODUCT_VERSION}",
            EVENT_HEADER: delivery.event,
            TIMESTAMP_HEADER: timestamp,
            SIGNATURE_HEADER: webhook_signature(
                secret=delivery.endpoint.secret, timestamp=timestamp, body=body
            ),
        },
    )
    code: int | None = None
    error = ""
    opener, refusal = _webhook_opener(delivery.endpoint.url)
    if opener is None:
        # Not retried: the address is the problem, not the receiver's availability.
        error, final = f"refused: {refusal}", True
    else:
        try:
            with opener.open(request, timeout=settings.WEBHOOK_TIMEOUT) as response:
                code = response.status
        except urllib.error.HTTPError as exc:
            code, error = exc.code, f"HTTP {exc.code}"
        except (urllib.error.URLError, OSError) as exc:
            error = f"{type(exc).__name__}: {exc}"[:500]
    ok = code is not None and 200 <= code < 300
    delivery.attempts += 1
    delivery.last_status_code = code
    delivery.last_error = error
    delivery.log = [
        *delivery.log,
        {"at": timezone.now().isoformat(), "status_code": code, "error": error},
    ]
    if ok:
        delivery.status = WebhookDeliveryStatus.DELIVERED
        delivery.delivered_at = timezone.now()
    elif final:
        delivery.status = WebhookDeliveryStatus.FAILED
    delivery.save()
    if not ok and not final:
        raise WebhookAttemptFailed(error or f"HTTP {code}")
