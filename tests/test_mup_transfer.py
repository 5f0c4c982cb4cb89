"""experiments/mup_transfer.py's reading of a grid: the fitted optimum and the verdict line."""
import math
import os

from lmjax.config import load_module
from tests.helpers import REPO

transfer = load_module(os.path.join(REPO, "experiments", "mup_transfer.py"))


def parabola_grid(param, optima, floor):
    """{(param, width, lr): [loss]} with loss = floor[w] + (log2 lr - log2 optimum[w])^2."""
    return {(param, w, lr): [floor[w] + (math.log2(lr) - math.log2(opt)) ** 2]
            for w, opt in optima.items() for lr in transfer.LRS}


def test_fitted_optimum_is_the_parabolas_vertex_and_edges_are_none():
    results = parabola_grid("mup", {32: 0.013, 64: 0.004, 128: 0.05}, {32: 2, 64: 2, 128: 2})
    assert math.isclose(transfer.fitted_optimum(results, "mup", 32), 0.013, rel_tol=1e-9)
    assert math.isclose(transfer.fitted_optimum(results, "mup", 64), 0.004, rel_tol=1e-9)
    assert transfer.fitted_optimum(results, "mup", 128) is None  # best at the grid's top


def test_verdict_reads_the_bar_off_the_table():
    steady = parabola_grid("mup", {32: 0.011, 64: 0.009, 128: 0.01}, {32: 2.2, 64: 2.1, 128: 2.0})
    drifting = parabola_grid("sp", {32: 0.02, 64: 0.01, 128: 0.005}, {32: 2.2, 64: 2.1, 128: 2.3})
    lines = transfer.verdict({**steady, **drifting}).splitlines()
    sp, mup = (next(line for line in lines if line.startswith(p)) for p in ("sp:", "mup:"))
    assert "best lr 0.01 0.01 0.01" in mup and "same grid point yes" in mup
    assert "falls with width yes" in mup
    assert "best lr 0.02 0.01 0.005" in sp and "same grid point no" in sp
    assert "falls with width no" in sp
