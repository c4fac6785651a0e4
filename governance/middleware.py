"""Assigns every HTTP request an X-Request-ID and exposes it (with the client address) to the
audit trail through ``governance.context``."""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

from governance.context import request_context

REQUEST_ID_HEADER = "X-Request-ID"


class RequestContextMiddleware:
    """Reuses a well-formed incoming ``X-Request-ID`` (so a trace crosses the proxy), otherwise
    generates one; echoes it on the response.

    The client address is ``REMOTE_ADDR``: forwarded-for headers are only as trustworthy as the
    proxy that sets them, so a deployment behind a proxy sets ``REMOTE_ADDR`` there (gunicorn's
    ``--forwarded-allow-ips``) rather than have the application believe any client's header.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        with request_context(
            request_id=request.headers.get(REQUEST_ID_HEADER),
            client_address=request.META.get("REMOTE_ADDR"),
        ) as context:
            request.request_id = context.request_id  # type: ignore[attr-defined]  # read by audit
            request.client_address = context.client_address  # type: ignore[attr-defined]
            response = self.get_response(request)
        response[REQUEST_ID_HEADER] = context.request_id
        return response
