"""The test suite's notebook wiring: the lessons executed by nbmake run in fast mode.

nbmake starts each notebook's kernel as a child of this process, so the kernel inherits
os.environ. MINIFOPE_FAST=1 shrinks the lessons' training (never what a cell shows);
an explicit MINIFOPE_FAST in the environment wins, e.g. MINIFOPE_FAST=0 for a full run.
"""

import os

os.environ.setdefault("MINIFOPE_FAST", "1")
