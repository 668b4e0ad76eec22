"""tally/pg.py: which PostgreSQL binaries are used, and how the server runs."""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

import psycopg
import pytest

from tally import pg

TOOLS = ("initdb", "pg_ctl", "postgres")


def fake_bindir(path: Path) -> Path:
    path.mkdir(parents=True)
    for tool in TOOLS:
        (path / tool).write_text("#!/bin/sh\n")
        (path / tool).chmod(0o700)
    return path


def test_an_unknown_tally_pg_choice_is_refused_with_the_valid_ones(monkeypatch):
    monkeypatch.setenv("TALLY_PG", "docker")
    with pytest.raises(pg.PostgresUnavailable, match="auto, system, embedded"):
        pg.find_bindir()


def test_system_choice_takes_the_bindir_named_by_tally_pg_bindir(monkeypatch, tmp_path):
    bindir = fake_bindir(tmp_path / "bin")
    monkeypatch.setenv("TALLY_PG", "system")
    monkeypatch.setenv("TALLY_PG_BINDIR", str(bindir))
    assert pg.find_bindir() == bindir


def test_a_directory_without_pg_ctl_is_not_a_bindir(tmp_path):
    bindir = fake_bindir(tmp_path / "bin")
    (bindir / "pg_ctl").unlink()
    assert not pg._is_bindir(bindir)


def test_readable_copy_keeps_the_shared_libraries_beside_the_binaries(tmp_path):
    # The embedded binaries find libpq through $ORIGIN/../../../<package>.libs.
    package = tmp_path / "site-packages" / "fake_pgserver"
    bindir = fake_bindir(package / "pginstall" / "bin")
    libs = package.parent / "fake_pgserver.libs"
    libs.mkdir()
    (libs / "libpq.so.5").write_text("")
    (libs / "libpq.so.5").chmod(0o600)
    copy = pg._readable_copy(package)
    try:
        copied_bin = copy / "pginstall" / "bin"
        assert pg._is_bindir(copied_bin)
        assert (copied_bin / "../../../fake_pgserver.libs/libpq.so.5").resolve().exists()
        for path in [copied_bin / "postgres", copy.parent / "fake_pgserver.libs" / "libpq.so.5"]:
            assert path.stat().st_mode & stat.S_IROTH
        assert (copied_bin / "postgres").stat().st_mode & stat.S_IXOTH
        assert pg._readable_copy(package) == copy  # made once, then reused
    finally:
        shutil.rmtree(copy.parent, ignore_errors=True)
    assert bindir.exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="only root hands the server to another user")
def test_the_server_runs_as_an_unprivileged_user_when_started_by_root(pg_server):
    owner = (pg_server.datadir / "postmaster.pid").stat().st_uid
    assert owner != 0
    with psycopg.connect(pg_server.dsn(), autocommit=True) as conn:
        row = conn.execute("select current_setting('data_directory')").fetchone()
    assert Path(row[0]) == pg_server.datadir
