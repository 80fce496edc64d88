"""Cluster faults under load: 3 real nodes on one PostgreSQL and one Redis, SDK clients
spread over them, a mixed one-to-one and group load of 200+ msgs/s, and one fault per
test — SIGKILL a node, SIGSTOP a node for 20 s, a node that loses
its node-id lease, a Redis restart, a PostgreSQL restart. After each, every ACKed
message must be stored once and delivered once, in seq order, to every member device,
with no deadlock in the PostgreSQL log (tests/cluster_harness.py has the load and the
checks), and no node may log a traceback for these expected failures. The longest ACK
wait is reported in the summary, not asserted.

Default size: 48 users, groups of 10, 24 and 48, 12 s of load (29 s around the pause).
``YIM_FAULTS_LONG=1`` runs 300 users, groups of up to 300 members, 60 s of load. A control
run with no fault (the baseline) runs at either size."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest
import pytest_asyncio
import redis.asyncio as aioredis

from yim.storage.postgres.store import migrate

from . import report
from .cluster_harness import ClusterNodes, Outcome, Run, Size, chosen_size
from .services import PostgresServer, RedisServer

pytestmark = pytest.mark.slow

PAUSE_S = 20.0  # how long the SIGSTOPped node stays stopped
KILLED_FOR_S = 5.0  # how long the SIGKILLed node stays down before it is started again
#: how long the load goes on after Redis is back (then the clients have no reason to sync)
REDIS_LOAD_AFTER_S = 2.0


@dataclass
class Env:
    pg: PostgresServer
    redis: RedisServer
    nodes: ClusterNodes
    run: Run

    @property
    def size(self) -> Size:
        return self.run.size


@pytest_asyncio.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    """A PostgreSQL and a Redis of this test's own (the test restarts them), 3 nodes, and
    the users, clients and groups of the load."""
    pg = PostgresServer()
    redis = RedisServer()
    nodes: ClusterNodes | None = None
    run: Run | None = None
    try:
        await asyncio.to_thread(pg.start)
        redis.start()
        admin = await asyncpg.connect(pg.dsn())
        try:
            await admin.execute("CREATE DATABASE yim")
        finally:
            await admin.close()
        await migrate(pg.dsn("yim"))
        nodes = ClusterNodes(tmp_path, pg.dsn("yim"), redis.url)
        await nodes.start()
        run = Run(nodes, pg.dsn("yim"), chosen_size())
        async with asyncio.timeout(120):
            await run.setup()
        yield Env(pg, redis, nodes, run)
    finally:
        if run is not None:
            await run.close()
        if nodes is not None:
            nodes.stop()
        redis.remove()
        pg.stop()


Fault = Callable[[Env, float], Awaitable[None]]


async def _under_load(env: Env, name: str, fault: Fault | None, seconds: float | None = None) -> None:
    """Run the load for ``seconds`` with ``fault(env, seconds)`` running beside it, then
    check everything; the outcome line goes to the summary either way."""
    seconds = seconds or env.size.seconds
    async with asyncio.timeout(seconds + env.size.drain_s + env.size.deliver_s + 120):
        load = asyncio.create_task(env.run.load(seconds))
        try:
            if fault is not None:
                await fault(env, seconds)
            await load
        finally:
            if not load.done():
                load.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await load
        await env.run.drain(env.size.drain_s)
        outcome = await env.run.verify(Outcome(name), env.pg.log_path, env.size.deliver_s)
    report.record(outcome.line())
    assert not outcome.problems, outcome.line() + "\n" + "\n".join(outcome.problems)
    # Every fault here is an expected one: the nodes log it in lines, never a traceback.
    assert outcome.node_tracebacks == 0, outcome.line()


async def test_baseline_without_a_fault(env: Env) -> None:
    await _under_load(env, "no fault", None)


async def test_sigkill_a_node_mid_load(env: Env) -> None:
    async def fault(env: Env, seconds: float) -> None:
        await asyncio.sleep(seconds * 0.3)
        env.nodes.kill(0)
        await asyncio.sleep(KILLED_FOR_S)
        await env.nodes.restart(0)

    await _under_load(env, "SIGKILL node 0 for 5 s", fault)


async def test_sigstop_a_node_for_20_s(env: Env) -> None:
    before = 3.0

    async def fault(env: Env, seconds: float) -> None:
        await asyncio.sleep(before)
        env.nodes.pause(1)
        try:
            await asyncio.sleep(PAUSE_S)
        finally:
            env.nodes.resume(1)

    await _under_load(env, "SIGSTOP node 1 for 20 s", fault, max(env.size.seconds, before + PAUSE_S + 6))


async def test_a_node_loses_its_lease(env: Env) -> None:
    """Another holder takes node 2's id lease (what a long pause plus a newcomer leads to):
    node 2 must stop being a node, and its users must carry on elsewhere."""

    async def fault(env: Env, seconds: float) -> None:
        await asyncio.sleep(seconds * 0.3)
        node_id = await env.nodes.node_id(2)
        r = aioredis.Redis.from_url(env.redis.url)
        try:
            await r.set(f"yim:nodeid:{{{node_id}}}", "another-node", px=600_000)
        finally:
            await r.aclose()

    await _under_load(env, "node 2 loses its id lease", fault)


async def test_restart_redis_mid_load(env: Env) -> None:
    """Redis comes back empty: no routes, leases or node registry. The load stops shortly
    after (sooner than a route refresh period), so a push that found no route is not
    made good by later traffic revealing the hole: it must reach its device anyway."""

    async def fault(env: Env, seconds: float) -> None:
        await asyncio.sleep(seconds - REDIS_LOAD_AFTER_S)
        await asyncio.to_thread(env.redis.restart)

    await _under_load(env, "Redis restarted", fault)


async def test_restart_postgresql_mid_load(env: Env) -> None:
    async def fault(env: Env, seconds: float) -> None:
        await asyncio.sleep(seconds * 0.3)
        await asyncio.to_thread(env.pg.restart)

    await _under_load(env, "PostgreSQL restarted (fast)", fault)
