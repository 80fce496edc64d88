"""The import contracts (.importlinter): yim keeps them, and they do break on a back-edge.

The second half runs the same contract text against a throwaway package shaped like yim,
once clean and once with each kind of back-edge, so a contract that silently checks nothing
(a renamed package, a typo in a layer) cannot pass here.
"""

from __future__ import annotations

import configparser
import os
import pkgutil
import re
import subprocess
import sys
from pathlib import Path

import pytest

import yim

ROOT = Path(__file__).resolve().parent.parent
CONTRACTS = ROOT / ".importlinter"
#: packages of yim outside the server stack's layers (the client has its own contract; web
#: is static files; __main__ is `python -m yim`)
OUTSIDE_LAYERS = {"client", "web", "__main__"}
PROBE = "yimprobe"


def lint_imports(config: Path, cwd: Path, pythonpath: str) -> subprocess.CompletedProcess[str]:
    """Run lint-imports as `make lint` does, from the venv of this interpreter."""
    exe = Path(sys.executable).parent / "lint-imports"
    env = {**os.environ, "PYTHONPATH": pythonpath}
    return subprocess.run(
        [str(exe), "--no-cache", "--no-logo", str(config)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def contract_sections() -> configparser.ConfigParser:
    parser = configparser.ConfigParser()
    parser.read(CONTRACTS)
    return parser


def module_lines(value: str) -> list[str]:
    return [line.strip() for line in value.splitlines() if line.strip()]


def test_yim_keeps_its_import_contracts() -> None:
    result = lint_imports(CONTRACTS, ROOT, os.environ.get("PYTHONPATH", str(ROOT)))
    assert result.returncode == 0, result.stdout + result.stderr
    contracts = sum(1 for name in contract_sections() if name.startswith("importlinter:contract:"))
    assert contracts >= 5  # layers, client, acyclic, the backends' independence, pure rules
    assert f"{contracts} kept, 0 broken" in result.stdout, result.stdout


def test_every_package_of_yim_is_placed() -> None:
    """A new package of yim must be given a layer and be forbidden to the client."""
    packages = {m.name for m in pkgutil.iter_modules(yim.__path__)}
    sections = contract_sections()
    layered = {
        name.strip().removeprefix("yim.")
        for line in module_lines(sections["importlinter:contract:layers"]["layers"])
        for name in line.split("|")
    }
    assert packages - OUTSIDE_LAYERS == layered
    forbidden = {
        m.removeprefix("yim.") for m in module_lines(sections["importlinter:contract:client"]["forbidden_modules"])
    }
    assert packages - {"client", "protocol", "__main__"} == forbidden


# --- the contracts can fail: a throwaway package shaped like yim ---------------------------

#: module -> source; every package the contracts name exists, importing only downwards
CLEAN: dict[str, str] = {
    "__init__.py": "",
    "protocol/__init__.py": "",
    "protocol/frames.py": "",
    "ids/__init__.py": "",
    "config.py": "from yimprobe.protocol import frames\n",
    "metrics.py": "",
    "logs.py": "",
    "push/__init__.py": "",
    "ipc/__init__.py": "",
    "storage/__init__.py": "from yimprobe import config, logs\n",
    "storage/records.py": "",
    "storage/rules/__init__.py": "from yimprobe.storage import records\n",
    "storage/adapters.py": "",
    "storage/sqlite/__init__.py": "from yimprobe.storage import adapters, rules\n",
    "storage/postgres/__init__.py": "from yimprobe.storage import adapters, rules\n",
    "services/__init__.py": "",
    "services/routing.py": "",
    "services/context.py": "from yimprobe.storage import postgres\n",
    "services/messages.py": "from yimprobe.services import context\n",
    "gateway/__init__.py": "from yimprobe.services import messages\n",
    "bus/__init__.py": "from yimprobe.services import context\n",
    "node.py": "from yimprobe import bus, gateway\n",
    "supervisor.py": "from yimprobe import node\n",
    "cli.py": "from yimprobe import client, node, supervisor\n",
    "client/__init__.py": "from yimprobe.protocol import frames\n",
    "web/__init__.py": "",
}

BACK_EDGES = {
    # a service naming the node under TYPE_CHECKING: still a back-edge
    "services-to-node": (
        "services/messages.py",
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from yimprobe import node\n",
        "The server's layers only point down",
    ),
    # the node naming the process supervisor that runs it as a worker
    "node-to-supervisor": ("node.py", "from yimprobe import supervisor\n", "The server's layers only point down"),
    "bus-to-gateway": ("bus/__init__.py", "from yimprobe import gateway\n", "The server's layers only point down"),
    "storage-to-services": (
        "storage/__init__.py",
        "from yimprobe.services import messages\n",
        "The server's layers only point down",
    ),
    "client-to-storage": ("client/__init__.py", "import yimprobe.storage\n", "The client imports only the protocol"),
    "backend-to-backend": (
        "storage/sqlite/__init__.py",
        "from yimprobe.storage import postgres\n",
        "The SQLite and PostgreSQL backends do not import each other",
    ),
    "rule-to-driver": (
        "storage/rules/__init__.py",
        "import asyncpg\n",
        "The storage rules reach no backend, no driver and nothing above storage",
    ),
    "cycle-in-services": (
        "services/context.py",
        "from yimprobe.services import messages\n",
        "No import cycles between the packages or modules of",
    ),
}


def write_probe(base: Path, extra: tuple[str, str] | None = None) -> Path:
    for rel, src in CLEAN.items():
        path = base / PROBE / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(src)
    if extra is not None:
        rel, src = extra
        path = base / PROBE / rel
        path.write_text(path.read_text() + src)
    config = base / "contracts.ini"
    config.write_text(re.sub(r"\byim\b", PROBE, CONTRACTS.read_text()))
    return config


def test_the_contracts_hold_on_a_clean_probe(tmp_path: Path) -> None:
    config = write_probe(tmp_path)
    result = lint_imports(config, tmp_path, str(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    contracts = sum(1 for name in contract_sections() if name.startswith("importlinter:contract:"))
    assert contracts >= 5  # layers, client, acyclic, the backends' independence, pure rules
    assert f"{contracts} kept, 0 broken" in result.stdout, result.stdout


@pytest.mark.parametrize("edge", sorted(BACK_EDGES))
def test_a_back_edge_breaks_its_contract(tmp_path: Path, edge: str) -> None:
    rel, src, contract = BACK_EDGES[edge]
    config = write_probe(tmp_path, (rel, src))
    result = lint_imports(config, tmp_path, str(tmp_path))
    assert result.returncode != 0, result.stdout
    broken = re.search(rf"^{re.escape(contract)}.* BROKEN", result.stdout, re.M)
    assert broken is not None, result.stdout


def test_nothing_in_yim_uses_asyncio_wait_for() -> None:
    """On Python 3.11 asyncio.wait_for can swallow the cancellation of the task awaiting it
    (yim/bus/bounded.py says how a node's stop hung on it): bounded waits use
    asyncio.timeout, or yim.bus.bounded.bounded."""
    users = [
        p.relative_to(ROOT).as_posix()
        for p in sorted((ROOT / "yim").rglob("*.py"))
        if "asyncio.wait_for(" in p.read_text(encoding="utf-8")
    ]
    assert users == []
