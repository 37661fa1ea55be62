"""Property-based requests over the OpenAPI document (schemathesis): every operation,
as an anonymous client and as an administrator, answers something other than 5xx.

The real app runs under uvicorn on 127.0.0.1 in a thread of its own (schemathesis
calls it with the blocking ``requests`` client). The examples are derandomized and
few per operation, so the run is the same on every machine and stays short. The
endless streams (alarm events, MJPEG) are left out: an answer that never ends
cannot be read to its end.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.strategies import SearchStrategy
from schemathesis import GenerationMode
from schemathesis.generation.case import Case
from schemathesis.schemas import APIOperation

from tests.app_fixtures import ADMIN_PASSWORD, serve_app
from tests.vms.test_bad_input import SITE as BASE_SITE

FUZZ = settings(
    max_examples=15,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)
"""Per operation and caller (anonymous, administrator): 15 examples, valid and not, the same on every run."""
POSITIVE, NEGATIVE = GenerationMode.POSITIVE, GenerationMode.NEGATIVE
"""Requests the document allows, and requests it does not (those must be refused with 4xx)."""
ENDLESS = r"/alarms/events|stream\.mjpeg$"
SITE = (
    BASE_SITE
    + """
auth:
  max_failed_logins: 1000000  # fuzzed logins fail by the hundred; the lockout is tested elsewhere
"""
)


@dataclass
class Served:
    base_url: str
    openapi: dict[str, Any]
    stop: threading.Event = field(default_factory=threading.Event)


@pytest.fixture(scope="module")
def served() -> Iterator[Served]:
    """The app served from another thread's event loop, for blocking clients."""
    ready = threading.Event()
    box: list[Served | BaseException] = []
    stop = threading.Event()

    async def run() -> None:
        async with serve_app(SITE) as app:
            openapi = (await app.http.get("/openapi.json")).json()
            box.append(Served(app.base_url, openapi, stop))
            ready.set()
            while not stop.is_set():
                await asyncio.sleep(0.05)

    def main() -> None:
        try:
            asyncio.run(run())
        except BaseException as err:
            box.append(err)
            ready.set()

    thread = threading.Thread(target=main, name="served-app")
    thread.start()
    try:
        assert ready.wait(30), "the app did not start"
        first = box[0]
        if isinstance(first, BaseException):
            raise first
        yield first
    finally:
        stop.set()
        thread.join(30)
        assert not thread.is_alive(), "the app did not stop"


WIDE = 1 << 70
"""Integers up to this size, beyond any database column, go into integer parameters."""


def wide_integers(openapi: dict[str, Any], operation: APIOperation) -> list[SearchStrategy[Case]]:
    """Cases whose integer path and query parameters are drawn from ±2**70: the document
    may not bound them, the database does."""
    listed = openapi["paths"][operation.path][operation.method.lower()].get("parameters", [])
    names = [(p["in"], p["name"]) for p in listed if _integer(p.get("schema", {}))]
    if not names:
        return []

    def cases(n: int) -> SearchStrategy[Case]:
        path = {name: n for where, name in names if where == "path"}
        query = {name: n for where, name in names if where == "query"}
        return operation.as_strategy(POSITIVE, path_parameters=path or None, query=query or None)

    beyond = st.sampled_from([1 << 63, -(1 << 63) - 1, WIDE])
    return [st.one_of(beyond, st.integers(min_value=-WIDE, max_value=WIDE)).flatmap(cases)]


def _integer(schema: dict[str, Any]) -> bool:
    kinds = [schema, *schema.get("anyOf", [])]
    return any(kind.get("type") == "integer" for kind in kinds)


class Admin:
    """An administrator's API token; made again if a fuzzed call revoked it."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.token = self._new_token()

    def _new_token(self) -> str:
        with requests.Session() as session:
            login = session.post(
                f"{self.base_url}/api/v1/auth/login",
                json={"username": "admin-xingning", "password": ADMIN_PASSWORD},
                timeout=10,
            )
            assert login.status_code == 200, login.text
            made = session.post(
                f"{self.base_url}/api/v1/auth/tokens",
                json={"name": "fuzz", "expires_days": 1},
                headers={"X-CSRF-Token": login.json()["csrf_token"]},
                timeout=10,
            )
            assert made.status_code == 201, made.text
            return str(made.json()["token"])

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def renew_if_refused(self, status: int) -> None:
        if status == 401:
            self.token = self._new_token()


def fuzz(cases: SearchStrategy[Case], call: Callable[[Case], None]) -> None:
    @FUZZ
    @given(case=cases)
    def check(case: Case) -> None:
        call(case)

    check()


def test_no_operation_answers_5xx(served: Served) -> None:
    schema = schemathesis.openapi.from_dict(served.openapi).exclude(path_regex=ENDLESS)
    admin = Admin(served.base_url)
    failures: list[str] = []
    operations = 0
    began = time.monotonic()
    with requests.Session() as session:

        def call(case: Case, as_admin: bool) -> None:
            headers = admin.headers() if as_admin else {}
            response = case.call(base_url=served.base_url, session=session, headers=headers, timeout=10)
            if response.status_code >= 500:
                who = "admin" if as_admin else "anonymous"
                failures.append(
                    f"{case.method} {case.formatted_path} as {who}: "
                    f"{response.status_code} {response.text[:200]}"
                )
            if as_admin:
                admin.renew_if_refused(response.status_code)

        for result in schema.get_all_operations():
            operation = result.ok()
            operations += 1

            cases = st.one_of(
                operation.as_strategy(POSITIVE),
                operation.as_strategy(NEGATIVE),
                *wide_integers(served.openapi, operation),
            )

            fuzz(cases, lambda case: call(case, False))
            fuzz(cases, lambda case: call(case, True))
    took = time.monotonic() - began
    assert operations >= 20, "the OpenAPI document lists fewer operations than expected"
    assert not failures, "\n".join(failures)
    assert took < 90, f"the fuzzing took {took:.0f} s"
