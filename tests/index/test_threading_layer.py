"""numba's threading layer for the parallel scan: TBB from the ``tbb`` wheel, unless the user chose another."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

from rsretrieve.index import kernels

pytestmark = pytest.mark.skipif(not kernels.AVAILABLE, reason="numba is not installed: the numpy path is used")

PROBE = ("from rsretrieve.index import kernels; import numba; kernels.threads(); "
         "print(numba.threading_layer(), kernels.TBB_LIBRARY.is_file())")


def _layer(**env: str) -> list[str]:
    base = {k: v for k, v in os.environ.items() if k not in ("NUMBA_THREADING_LAYER", "LD_LIBRARY_PATH")}
    got = subprocess.run([sys.executable, "-c", PROBE], env={**base, **env}, capture_output=True, text=True,
                         timeout=120)
    assert got.returncode == 0, got.stderr
    return got.stdout.split()


@pytest.mark.skipif(not (sys.platform.startswith("linux") and platform.machine() == "x86_64"),
                    reason="the tbb wheel is a dependency on Linux x86_64 only")
def test_tbb_wheel_is_numbas_layer():
    layer, installed = _layer()
    assert installed == "True", f"{kernels.TBB_LIBRARY} missing: the tbb dependency is not installed"
    assert layer == "tbb"  # numba alone does not find the wheel's library in a virtual environment's lib/


def test_a_layer_the_user_chose_is_kept():
    layer, _ = _layer(NUMBA_THREADING_LAYER="workqueue")
    assert layer == "workqueue"
