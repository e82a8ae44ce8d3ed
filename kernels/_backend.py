"""Chooses between the compiled kernels and their NumPy references.

``FUNNEL_PURE_PYTHON=1`` forces the reference path everywhere (CI runs the
kernel tests both ways). Without it, a missing compiled module is an error at
import time rather than a silent slow path: a serving build must be compiled.
"""

import os

PURE_PYTHON = os.environ.get("FUNNEL_PURE_PYTHON", "") not in ("", "0", "false", "no")


def item_block(address: int, rows: int, width: int):
    """NumPy view of one item chunk given its address (reference path only)."""
    import ctypes

    import numpy as np

    return np.ctypeslib.as_array(ctypes.cast(address, ctypes.POINTER(ctypes.c_float)), shape=(rows, width))
