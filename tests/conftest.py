import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


@pytest.fixture
def root() -> Path:
    return ROOT


def write_sweep(path: Path, body: str) -> Path:
    path.write_text(body)
    return path


TINY = """
experiment = "example"
seeds = 2
[fixed]
n = 16
n_test = 64
d = 4
steps = 20
n_log = 4
[grid]
width = [4, 8]
eta = [0.0, 0.2]
"""
