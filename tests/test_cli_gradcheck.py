"""`python -m minifope gradcheck` runs the real check and reports each position embedding."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gradcheck_command_reports_every_pe_within_tolerance():
    result = subprocess.run([sys.executable, "-m", "minifope", "gradcheck"], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    rows = [line.split() for line in result.stdout.splitlines() if line.split()[:1] and
            line.split()[0] in ("rope", "fope", "fope-learnable", "alibi", "nope", "sinusoidal")]
    assert [r[0] for r in rows] == ["rope", "fope", "fope-learnable", "alibi", "nope", "sinusoidal"]
    assert all(float(r[1]) <= 1e-8 and r[2] == "ok" for r in rows)
