"""Faults the stand-in's Django middleware injects, chosen by tests (no Django import here).

On top of the shared ``Fault`` (status, Retry-After, JSON body, body rewrite, truncation, delay):
``html`` answers with an HTML page (a proxy's 502, a 200 login page), ``hang`` holds the request
until the stand-in stops, ``before`` / ``after`` run a callback (usually a write to the registry)
before this page is built or after it was, and ``page`` matches one page of the listing.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

from ..http import Fault, FaultInjector

PROXY_502_HTML = (
    b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n<center><h1>502 Bad Gateway"
    b"</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
)
LOGIN_PAGE_HTML = (
    b"<!DOCTYPE html><html><head><title>Log in | Django site admin</title></head><body>"
    b'<form method="post" action="/admin/login/"><input name="username"></form></body></html>'
)
LISTING = re.compile(r"/api/members/eligible/?$|/felagar/api/full/?$")


@dataclass
class RegistryFault(Fault):
    html: bool = False  # an HTML body (status None: 200 with the login page)
    hang: bool = False
    page: int | None = None  # only this page of a listing (1 = the request without ?page=)
    before: Callable[[], Any] | None = None
    after: Callable[[], Any] | None = None

    def matches(self, method: str, target: str) -> bool:
        if not super().matches(method, target):
            return False
        if self.page is None:
            return True
        parts = urlsplit(target)
        if not LISTING.search(parts.path):
            return False
        return int(parse_qs(parts.query).get("page", ["1"])[0]) == self.page

    def html_body(self) -> bytes:
        if isinstance(self.body, bytes):
            return self.body
        return PROXY_502_HTML if (self.status or 200) >= 500 else LOGIN_PAGE_HTML


class RegistryFaults(FaultInjector):
    def add(self, fault: Fault | None = None, **kwargs: Any) -> Fault:
        return super().add(fault or RegistryFault(**kwargs))

    def between_pages(
        self, callback: Callable[[], Any], *, after_page: int = 1, times: int | None = 1
    ) -> Fault:
        """Run ``callback`` (a write) after ``after_page`` was served, before the next is read."""
        return self.add(page=after_page, after=callback, times=times)
