"""The hang watchdog (tests/hangwatch.py), run the way CI runs it: a real pytest process."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).parent

CASES = '''
import re

def test_before():
    pass

def test_holds_the_gil_forever():
    # Catastrophic backtracking: the regex engine never releases the GIL, so no Python-level
    # timer or signal handler could interrupt it (2**60 steps).
    re.match(r"(a+)+$", "a" * 60 + "b")

def test_after():
    pass
'''


def run_pytest(tmp_path: Path, cases: str, seconds: str) -> tuple[subprocess.CompletedProcess, float]:
    (tmp_path / "test_cases.py").write_text(cases)
    env = {**os.environ, "GTACITY_TEST_HANG_SECONDS": seconds, "PYTHONPATH": str(HERE)}
    start = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "hangwatch", "-p", "no:cacheprovider",
         "--rootdir", str(tmp_path), "-c", os.devnull, str(tmp_path / "test_cases.py")],
        capture_output=True, text=True, timeout=120, cwd=tmp_path, env=env,
    )
    return done, time.monotonic() - start


def test_a_test_that_hangs_holding_the_gil_ends_the_run_with_its_stack(tmp_path):
    done, seconds = run_pytest(tmp_path, CASES, "3")
    assert done.returncode != 0
    assert seconds < 60
    assert "Timeout" in done.stderr
    # Where it hung: the test function's own frame is in the dump.
    assert "test_holds_the_gil_forever" in done.stderr and "test_cases.py" in done.stderr
    assert "test_after" not in done.stdout + done.stderr  # the run ended there


def test_the_limit_is_per_test_not_per_run(tmp_path):
    cases = "import time\n\ndef test_one():\n    time.sleep(2)\n\ndef test_two():\n    time.sleep(2)\n"
    done, _ = run_pytest(tmp_path, cases, "3")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 passed" in done.stdout and "Timeout" not in done.stderr
