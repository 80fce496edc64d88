"""``yim serve`` that cannot start says why in one line (exit status 2), never with a
traceback: settings that do not fit together, a port in use, a missing certificate, a data
folder it cannot make or write, a bad setting value (which setting, which value, what it
takes). A folder in use by another node: tests/test_data_lock.py; a store written by a
newer release: tests/test_upgrade.py."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import ROOT, free_port


def _serve(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "yim", "serve", "--data", str(tmp_path / "data"), *args]
    return subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=30, env={**os.environ, **env})


def _said(done: subprocess.CompletedProcess[str]) -> str:
    """The one line ``yim serve`` printed, after checking it exited 2 with nothing else."""
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    return lines[0]


@contextlib.contextmanager
def _unwritable(folder: Path) -> Iterator[None]:
    """``folder`` (which exists) made unwritable for this process. Root writes through file
    modes, so as root the folder is made immutable (chattr +i) instead."""
    if os.geteuid() != 0:
        folder.chmod(0o500)
        try:
            yield
        finally:
            folder.chmod(0o700)
        return
    chattr = shutil.which("chattr")
    if chattr is None:
        pytest.fail("chattr is missing: apt-get install e2fsprogs", pytrace=False)
    done = subprocess.run([chattr, "+i", str(folder)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.fail(
            f"chattr +i {folder} failed (the test needs ext4 or another filesystem with"
            f" immutable attributes under the temp folder): {done.stderr.strip()}",
            pytrace=False,
        )
    try:
        yield
    finally:
        subprocess.run([chattr, "-i", str(folder)], check=True)


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["--store", "mysql://db/yim"], "yim serve: cannot start: unsupported store 'mysql://db/yim'"),
        (["--redis", "redis://127.0.0.1:1/0"], "yim serve: cannot start: cluster mode (redis_url) needs"),
        (
            ["--tls-cert", "/nonexistent/cert.pem", "--tls-key", "/nonexistent/key.pem"],
            "yim serve: cannot use the TLS certificate /nonexistent/cert.pem and key /nonexistent/key.pem",
        ),
    ],
)
def test_a_node_that_cannot_start_says_why_in_one_line(tmp_path: Path, args: list[str], said: str) -> None:
    done = _serve(tmp_path, "--port", str(free_port()), *args)
    assert done.returncode == 2, done.stderr
    assert said in done.stderr and "Traceback" not in done.stderr, done.stderr


def test_a_port_in_use_is_said_in_one_line(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        done = _serve(tmp_path, "--port", str(taken.getsockname()[1]))
    assert done.returncode == 2, done.stderr
    said = done.stderr
    assert "yim serve: cannot start:" in said and "in use" in said and "Traceback" not in said, said


def test_a_data_folder_that_is_not_writable_is_said_in_one_line(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    with _unwritable(data):
        said = _said(_serve(tmp_path, "--port", "0"))
    assert said.startswith(f"yim serve: cannot start: data folder {data} is not writable: "), said


def test_a_missing_data_folder_that_cannot_be_made_is_said_in_one_line(tmp_path: Path) -> None:
    parent = tmp_path / "ro"
    parent.mkdir()
    data = parent / "data"
    with _unwritable(parent):
        said = _said(_serve(tmp_path, "--port", "0", "--data", str(data)))
    assert said.startswith(f"yim serve: cannot start: data folder {data} cannot be created: "), said
    assert not data.exists()


def test_a_data_path_under_a_file_is_said_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a folder")
    for data in (tmp_path / "file", tmp_path / "file" / "data"):
        said = _said(_serve(tmp_path, "--port", "0", "--data", str(data)))
        assert said == f"yim serve: cannot start: data folder {data}: {tmp_path / 'file'} is a file, not a folder"


def test_a_store_file_that_cannot_be_opened_is_said_in_one_line(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    store = f"sqlite:///{elsewhere / 'yim.db'}"
    with _unwritable(elsewhere):  # the store's folder is a data folder too
        said = _said(_serve(tmp_path, "--port", "0", "--store", store))
    assert said.startswith(f"yim serve: cannot start: data folder {elsewhere} is not writable: "), said
    (elsewhere / "yim.db").mkdir()
    said = _said(_serve(tmp_path, "--port", "0", "--store", store))
    assert (
        said
        == f"yim serve: cannot start: cannot open the SQLite store {elsewhere / 'yim.db'}: unable to open database file"
    )


@pytest.mark.parametrize(
    ("env", "said"),
    [
        (
            {"YIM_PORT": "eighty"},
            "yim serve: bad setting: port = 'eighty' (from YIM_PORT): Expected `int`, got `str`;"
            " allowed: an integer from 0 to 65535",
        ),
        (
            {"YIM_PORT": "99999"},
            "yim serve: bad setting: port = '99999' (from YIM_PORT): Expected `int` <= 65535;"
            " allowed: an integer from 0 to 65535",
        ),
        (
            {"YIM_SQLITE_SYNCHRONOUS": "OFF"},
            "yim serve: bad setting: sqlite_synchronous = 'OFF' (from YIM_SQLITE_SYNCHRONOUS): Invalid enum value"
            " 'OFF'; allowed: one of 'FULL', 'NORMAL'",
        ),
        (
            {"YIM_NODE_ID_LEASE": "maybe"},
            "yim serve: bad setting: node_id_lease = 'maybe' (from YIM_NODE_ID_LEASE): Expected `bool`, got `str`;"
            " allowed: true or false",
        ),
        (
            {"YIM_HEARTBEAT_S": "often"},
            "yim serve: bad setting: heartbeat_s = 'often' (from YIM_HEARTBEAT_S): Expected `float`, got `str`;"
            " allowed: a number",
        ),
        ({"YIM_CONFIG": "/nonexistent/yim.toml"}, "yim serve: config file /nonexistent/yim.toml: No such file"),
    ],
)
def test_a_bad_setting_value_is_said_in_one_line(tmp_path: Path, env: dict[str, str], said: str) -> None:
    assert _said(_serve(tmp_path, **env)).startswith(said)
    assert not (tmp_path / "data").exists()  # refused before anything is made


def test_a_bad_config_file_is_said_in_one_line(tmp_path: Path) -> None:
    config = tmp_path / "yim.toml"
    config.write_text("port = 8080\nnode_id = 4096\n")
    said = _said(_serve(tmp_path, "--config", str(config)))
    assert said == (
        f"yim serve: bad setting: node_id = 4096 (from {config}): Expected `int` <= 1023;"
        " allowed: an integer from 0 to 1023"
    )
    config.write_text("port = 8080\nportt = 8081\n")
    assert _said(_serve(tmp_path, "--config", str(config))) == (
        f"yim serve: bad setting: there is no setting 'portt' (in {config})"
    )
    config.write_text('port = "8080\n')
    assert _said(_serve(tmp_path, "--config", str(config))).startswith(
        f"yim serve: config file {config} is not valid TOML: "
    )
