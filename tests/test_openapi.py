"""The OpenAPI 3.1 description at ``GET /api/v1/openapi.json`` is generated from the typed
schemas and the route table; schemathesis fuzzes every operation in it against a live node
with a valid bearer token: no 5xx, and every response conforms to the described status,
content type, headers and schema."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.conftest import MakeServer
from tests.rawclient import Device, make_users
from tests.report import record
from yim.gateway.http import OP_ROUTES
from yim.gateway.openapi import EXPLICIT, app_routes

#: Bounded run: ~1,700 generated requests in ~15-25 s on 2 cores. More: YIM_FUZZ_EXAMPLES=50.
MAX_EXAMPLES = int(os.environ.get("YIM_FUZZ_EXAMPLES", "5"))
SEED = os.environ.get("YIM_FUZZ_SEED", "3")


def _fmt(path: str) -> str:
    return re.sub(r"\{(\w+)(?::(?:[^{}]|\{[^{}]*\})*)?\}", r"{\1}", path)


@pytest.mark.backends("sqlite")  # the description does not depend on the store
async def test_openapi_document_describes_every_route(make_server: MakeServer) -> None:
    server = await make_server()
    async with aiohttp.ClientSession(server.url) as http:
        r = await http.get("/api/v1/openapi.json")  # public, like /healthz
        assert r.status == 200 and r.content_type == "application/json"
        doc = await r.json()
    assert doc["openapi"] == "3.1.0"
    paths = doc["paths"]
    for method, path, *_ in OP_ROUTES:
        entry = paths[_fmt(path)][method.lower()]
        assert "x-yim-undescribed" not in entry
    for method, path in EXPLICIT:
        assert method.lower() in paths[path], (method, path)
    undescribed = [(m, p) for p, ops in paths.items() for m, op in ops.items() if op.get("x-yim-undescribed")]
    assert not undescribed, f"add these routes to yim/gateway/openapi.py EXPLICIT: {undescribed}"
    # every /api/ route the app serves is in the description
    served = {(m.lower(), _fmt(p)) for m, p in app_routes(server.app) if p.startswith("/api/") and m != "HEAD"}
    described = {(m, p) for p, ops in paths.items() for m in ops}
    assert served <= described
    send = paths["/api/v1/messages"]["post"]
    assert send["responses"]["201"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/SendAck"}
    body = send["requestBody"]["content"]["application/json"]["schema"]
    assert body["additionalProperties"] is False and "sender_id" not in body["properties"]
    assert paths["/api/v1/sessions"]["post"]["security"] == []  # login needs no token
    # the probes a balancer uses: their 503 bodies are their own structs, not an Error
    for path, struct in (("/healthz", "Health"), ("/readyz", "Readiness")):
        probe = paths[path]["get"]
        assert probe["security"] == []
        for status in ("200", "503"):
            schema = probe["responses"][status]["content"]["application/json"]["schema"]
            assert schema == {"$ref": f"#/components/schemas/{struct}"}, (path, status)
    assert doc["security"] == [{"bearer": []}]
    # ids in paths are constrained like the structs constrain them
    params = paths["/api/v1/conversations/{conv_id}/messages"]["get"]["parameters"]
    assert params[0] == {
        "name": "conv_id",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "pattern": "^[0-9]{1,20}$"},
    }


async def _seed_data(url: str) -> str:
    """A user with a token, a friend, a direct chat and a group, so ids exist to hit."""
    async with aiohttp.ClientSession(url) as http:
        fuzzer, peer = await make_users(http, ["fuzzer", "peer"])
        a, b = Device(http, fuzzer), Device(http, peer)
        await a.connect()
        await b.connect()
        await a.request("send", to=b.user_id, kind="text", body={"text": "hi"}, client_msg_id="seed-1")
        await a.request("group_create", name="fuzz group", members=[b.user_id])
        await b.request("friend_request", to=a.user_id)
        await a.close()
        await b.close()
        return str(fuzzer["token"])


async def test_schemathesis_finds_no_server_error_and_no_nonconforming_response(
    make_server: MakeServer, tmp_path: Path, caplog: pytest.LogCaptureFixture, backend: str
) -> None:
    server = await make_server()
    token = await _seed_data(server.url)
    caplog.set_level(logging.ERROR, logger="yim")
    args = [
        "-m",
        "schemathesis.cli",
        "run",
        f"{server.url}/api/v1/openapi.json",
        "-H",
        f"Authorization: Bearer {token}",
        "--max-examples",
        str(MAX_EXAMPLES),
        "--seed",
        SEED,
        "--generation-database",
        "none",
        "--no-color",
        "--request-timeout",
        "10",
        # These two end the fuzzer's own session (logout, device revocation): every later
        # request would only see 401. Both are covered by tests/test_authz.py.
        "--exclude-path",
        "/api/v1/sessions/current",
        "--exclude-path-regex",
        "^/api/v1/devices/",
        # positive_data_acceptance expects 2xx for any schema-valid input, but domain rules
        # refuse some of it on purpose (400 "give at most one of before/after", "you cannot
        # follow yourself", 410 for a dissolved group): not expressible in a schema.
        # ensure_resource_availability follows links it infers between operations and
        # expects a 2xx: "POST /shops then GET /shops/{id}/service" is 404 by design (the
        # fuzzer has no service session with the shop it just created).
        "--exclude-checks",
        "positive_data_acceptance,ensure_resource_availability",
    ]
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        *args,
        cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "SCHEMATHESIS_HOOKS": ""},
    )
    try:
        out_b, _ = await asyncio.wait_for(proc.communicate(), timeout=240)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    out = out_b.decode(errors="replace")
    failed_ops = sorted(set(re.findall(r"^_{3,} ([A-Z]+ /\S+) _{3,}$", out, re.M)))
    tail = "\n".join(failed_ops) + "\n" + out[-6000:]
    assert proc.returncode == 0, tail
    m = re.search(r"(\d+) generated, (\d+) passed", out)
    ops = re.search(r"Tested: (\d+)", out)
    assert m and ops, tail
    generated, passed = int(m.group(1)), int(m.group(2))
    assert generated == passed and generated > 200, tail
    yim_errors: list[Any] = [r for r in caplog.records if r.name.startswith("yim")]
    assert not yim_errors, [r.getMessage() for r in yim_errors]
    record(
        f"schemathesis [{backend}]: {ops.group(1)} operations, {generated} requests (seed {SEED}, "
        f"max-examples {MAX_EXAMPLES}), "
        "0 server errors, 0 nonconforming responses"
    )
