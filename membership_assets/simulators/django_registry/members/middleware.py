"""Middleware of the stand-in: request log and rate limit, switchable ConditionalGet, faults."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from django.http import HttpResponse, JsonResponse
from django.middleware.http import ConditionalGetMiddleware
from django.urls import Resolver404, resolve

from .. import runtime

ROUTES = {"eligible-list": "members_page", "eligible-detail": "member", "full-list": "full_page"}


def _route(request: Any, response: Any) -> str:
    if getattr(request, "stand_in_route", None):
        return request.stand_in_route
    status = response.status_code
    if status == 304:
        return "not_modified"
    if status in (401, 403):
        return "unauthorized"
    if status in (301, 302):
        return "redirect"
    match = getattr(request, "resolver_match", None)
    if match is None:
        return "not_found" if status == 404 else "other"
    return ROUTES.get(match.url_name, match.url_name or "other")


class RequestLogMiddleware:
    """Counts every request by route and status; the stand-in's server-side rate limit."""

    def __init__(self, get_response: Callable) -> None:
        self.get_response = get_response

    def __call__(self, request: Any) -> Any:
        stand_in = runtime.current()
        wait = stand_in.bucket.take() if stand_in.bucket is not None else 0.0
        if wait > 0:
            response = JsonResponse({"detail": "Request was throttled."}, status=429)
            response["Retry-After"] = str(max(1, int(wait + 0.999)))
            request.stand_in_route = "rate_limited"
        else:
            response = self.get_response(request)
        stand_in.requests.record(_route(request, response), response.status_code)
        return response


class SwitchableConditionalGetMiddleware:
    """Django's ConditionalGetMiddleware (page-content ETag, 304) when the stand-in turns it on."""

    def __init__(self, get_response: Callable) -> None:
        self.get_response = get_response
        self.conditional = ConditionalGetMiddleware(get_response)

    def __call__(self, request: Any) -> Any:
        if runtime.current().etag_mode == "middleware":
            return self.conditional(request)
        return self.get_response(request)


class FaultMiddleware:
    """The faults tests add with ``stand_in.faults.add(...)`` (see ``faults.RegistryFault``)."""

    def __init__(self, get_response: Callable) -> None:
        self.get_response = get_response

    def __call__(self, request: Any) -> Any:
        stand_in = runtime.current()
        try:  # a path that resolves nowhere is answered by CommonMiddleware's redirect: no fault
            resolve(request.path_info)
        except Resolver404:
            return self.get_response(request)
        fault = stand_in.faults.take(request.method, request.get_full_path())
        if fault is None:
            return self.get_response(request)
        if getattr(fault, "before", None):
            fault.before()
        if fault.delay:
            stand_in.stopping.wait(fault.delay)  # a slow page, cut short when the stand-in stops
        if getattr(fault, "hang", False):
            stand_in.stopping.wait()
        if fault.status is not None or getattr(fault, "html", False):
            response = self._injected(fault)
            request.stand_in_route = "fault"
        else:
            response = self.get_response(request)
            self._rewrite(fault, response)
        if getattr(fault, "after", None):
            fault.after()
        return response

    @staticmethod
    def _injected(fault: Any) -> HttpResponse:
        status = fault.status or 200
        if getattr(fault, "html", False):
            response = HttpResponse(fault.html_body(), status=status, content_type="text/html")
        elif isinstance(fault.body, bytes):
            response = HttpResponse(fault.body, status=status, content_type="application/octet-stream")
        else:
            body = fault.body if fault.body is not None else {"detail": "injected fault"}
            response = HttpResponse(json.dumps(body), status=status, content_type="application/json")
        if fault.retry_after:
            response["Retry-After"] = fault.retry_after
        return response

    @staticmethod
    def _rewrite(fault: Any, response: Any) -> None:
        if fault.mutate is not None and response.content:
            response.content = json.dumps(fault.mutate(json.loads(response.content))).encode()
        if fault.truncate_body:
            response.content = response.content[: max(1, len(response.content) // 2)]
