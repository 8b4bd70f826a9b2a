"""SIGTERM (``kill``, ``timeout``, a job scheduler) stops `ingest` and `export` the way Ctrl-C does: what is
committed stays, nothing half-written is left, one line says so, exit code 143; the same command then completes.

The signal lands at a deterministic point: a child process runs the real command with a function replaced by one
that sends SIGTERM to its own process after doing its work (after the third scene committed; after the parquet file
is written to its temporary name, before the rename).
"""

import os
import sqlite3
import subprocess
import sys

import pyarrow.parquet as pq

from tests.conftest import ROOT, make_workspace, run_cli

_TERM_AFTER_THIRD_SCENE = """
import os, signal, sys
from rsretrieve.data.catalog import Catalog
write = Catalog.write_scene
def write_then_term(self, *args, **kwargs):
    out = write(self, *args, **kwargs)
    if self.conn.execute("SELECT COUNT(*) FROM scenes").fetchone()[0] == 3:
        os.kill(os.getpid(), signal.SIGTERM)
    return out
Catalog.write_scene = write_then_term
from rsretrieve.cli import main
sys.exit(main(sys.argv[1:]))
"""

# argv[1]: the signal to send (TERM or KILL)
_SIGNAL_AFTER_WRITING_PARQUET = """
import os, signal, sys
import pyarrow.parquet as pq
write = pq.write_table
sig = getattr(signal, "SIG" + sys.argv.pop(1))
def write_then_signal(*args, **kwargs):
    write(*args, **kwargs)
    os.kill(os.getpid(), sig)
pq.write_table = write_then_signal
from rsretrieve.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _child(code: str, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code, *map(str, args)], cwd=ROOT, capture_output=True, text=True,
                          timeout=600)


def _scenes(ws) -> list[tuple]:
    con = sqlite3.connect(ws / "catalog.sqlite")
    try:
        return sorted(con.execute("SELECT key, fingerprint, n_tiles FROM scenes"))
    finally:
        con.close()


def test_sigterm_stops_ingest_with_two_workers_keeping_whole_scenes_and_the_rerun_completes(tmp_path):
    ref = make_workspace(tmp_path, scenes=3, size_m=1920, index=False)  # the archive and an uninterrupted ingest
    ws = tmp_path / "ws2"
    r = _child(_TERM_AFTER_THIRD_SCENE, "ingest", tmp_path / "archive", "-w", ws, "--workers", "2")
    assert r.returncode == 143, r.stderr[-2000:]
    assert r.stderr.strip().splitlines()[-1] == ("interrupted by SIGTERM: everything committed so far is kept; run "
                                                 "the same command again to continue")
    assert "Traceback" not in r.stderr and "leaked" not in r.stderr  # the worker pool was shut down
    kept = _scenes(ws)
    assert len(kept) == 3 and set(kept) <= set(_scenes(ref))
    r = run_cli("ingest", tmp_path / "archive", "-w", ws, "--workers", "2")
    assert r.returncode == 0 and "3 already in the catalog" in r.stdout, r.stderr
    assert _scenes(ws) == _scenes(ref)


def test_sigterm_during_export_leaves_out_as_it_was_and_no_temporary_file(tmp_path):
    ws = make_workspace(tmp_path, scenes=2, size_m=1440)  # indexed: the export has an embedding column
    out = tmp_path / "out" / "tiles.parquet"
    assert run_cli("export", out, "-w", ws).returncode == 0
    before = out.read_bytes()
    out.write_bytes(before[:100])  # an earlier file the interrupted export must not replace (nor leave beside)
    r = _child(_SIGNAL_AFTER_WRITING_PARQUET, "TERM", "export", out, "-w", ws)
    assert r.returncode == 143 and r.stdout == "", r.stderr[-2000:]
    assert r.stderr.strip().splitlines()[-1] == (f"interrupted by SIGTERM: {out} was not written (a file there "
                                                 "before is left as it was); run the same command again")
    assert out.read_bytes() == before[:100]
    assert [p.name for p in out.parent.iterdir()] == ["tiles.parquet"]  # no .tiles.parquet.tmp<pid> left behind
    r = run_cli("export", out, "-w", ws)
    assert r.returncode == 0, r.stderr
    table = pq.read_table(out)
    assert table.num_rows > 0 and "embedding" in table.column_names and out.read_bytes() == before


def test_the_next_export_removes_the_temporary_file_of_one_killed_by_kill_9(tmp_path):
    ws = make_workspace(tmp_path, scenes=2, size_m=1440, index=False)
    out = tmp_path / "out" / "tiles.parquet"
    r = _child(_SIGNAL_AFTER_WRITING_PARQUET, "KILL", "export", out, "-w", ws)
    assert r.returncode == -9, r.stderr[-2000:]
    (left,) = out.parent.iterdir()  # kill -9 runs no clean-up: its whole file under the temporary name
    assert left.name.startswith(".tiles.parquet.tmp") and not out.exists()
    alive = out.parent / f".tiles.parquet.tmp{os.getppid()}"  # the name of a running export's file: left alone
    alive.write_bytes(b"x")
    r = run_cli("export", out, "-w", ws)
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in out.parent.iterdir()) == [alive.name, "tiles.parquet"]
    assert pq.read_table(out).num_rows > 0
