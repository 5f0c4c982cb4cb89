"""Test session set-up shared by every test module."""
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# `from tests import helpers` works however pytest is started (pytest, python -m pytest, a path).
if REPO not in sys.path:
    sys.path.insert(0, REPO)

# Numerical tolerances assume CPU float32 matmuls; accelerators default to lower-precision
# passes. Set JAX_PLATFORMS explicitly to run the suite elsewhere.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
