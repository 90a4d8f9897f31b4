"""Operator-experience tests (issue 17): the CLI as a person meets it.

They reuse the FUSE tests' helpers (real cluster, real mount, always
unmounted in `finally`), so tests/fuse is put on sys.path here.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "fuse"))
