"""Shared by the bench_*.py scripts: each owns one section of docs/benchmarks.md and rewrites only that section."""

from __future__ import annotations

import os
import platform
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

DOC = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"
#: the real samples (``--real`` of the scripts that read them): $RSRETRIEVE_REAL_DATA, else ../shared/data/real
REAL_DATA = Path(os.environ.get("RSRETRIEVE_REAL_DATA",
                                Path(__file__).resolve().parents[2] / "shared" / "data" / "real"))
HEADER = (
    "# Benchmarks\n\n"
    "Every number here is written by a script in `scripts/` (named in each section) and can be reproduced by\n"
    "running it again. Ratios compare against a baseline measured in the same run, on the same machine.\n"
)


def _simd() -> str:
    """The widest x86 vector extension the CPU reports (compiled kernels and torch differ between them), or ''."""
    try:
        flags = next((ln.split(":", 1)[1].split() for ln in open("/proc/cpuinfo") if ln.startswith("flags")), [])
    except OSError:
        return ""
    return next((name for flag, name in (("avx512f", "AVX-512"), ("avx2", "AVX2")) if flag in flags), "")


def machine() -> str:
    """One line describing where the numbers were measured."""
    simd = _simd()
    return (f"{platform.machine()}{f' ({simd})' if simd else ''}, {os.cpu_count()} cores, "
            f"Python {platform.python_version()}, {platform.system()}")


def write_section(name: str, markdown: str) -> Path:
    """Replace (or append) the section ``name`` of docs/benchmarks.md with ``markdown``."""
    DOC.parent.mkdir(parents=True, exist_ok=True)
    text = DOC.read_text() if DOC.exists() else HEADER
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    block = (f"<!-- {name}:start -->\n{markdown.rstrip()}\n\n_Measured {stamp} on {machine()}._\n"
             f"<!-- {name}:end -->")
    pat = re.compile(rf"<!-- {re.escape(name)}:start -->.*?<!-- {re.escape(name)}:end -->", re.S)
    text = pat.sub(lambda _: block, text) if pat.search(text) else text.rstrip() + "\n\n" + block + "\n"
    DOC.write_text(text)
    return DOC


def kept_subsection(section: str, heading: str) -> tuple[str, str] | None:
    """The part of the section ``section`` of docs/benchmarks.md from ``heading`` (a regular expression) to the
    section's closing stamp (as :func:`write_section` writes it; a kept part may carry a line of its own before
    it), and the stamp's date: (text, date); None when the doc or the part is not there."""
    text = DOC.read_text() if DOC.exists() else ""
    m = re.search(rf"<!-- {re.escape(section)}:start -->\n.*?({heading}.*)\n\n_Measured ([^\n]*?)(?: on [^\n]*)?"
                  rf"\._\n<!-- {re.escape(section)}:end -->", text, re.S)
    return (m.group(1).rstrip(), m.group(2)) if m else None


def publish(name: str, lines: list[str], write: bool = True) -> None:
    """Write ``lines`` as the section ``name`` (unless ``write`` is False), then print them."""
    text = "\n".join(lines)
    if write:
        write_section(name, text)
    print(text)


@contextmanager
def scratch_dir(path: str | None, prefix: str) -> Iterator[Path]:
    """The folder a benchmark builds its indexes in: ``path`` (``--workdir``: created if missing, kept), or a new
    temporary folder named ``prefix...``, removed at the end."""
    work = Path(path) if path else Path(tempfile.mkdtemp(prefix=prefix))
    work.mkdir(parents=True, exist_ok=True)
    try:
        yield work
    finally:
        if not path:
            shutil.rmtree(work, ignore_errors=True)
