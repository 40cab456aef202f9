"""The one way the study reports get matplotlib (the ``study`` extra)."""

from __future__ import annotations

from types import ModuleType

from alkernels._extras import missing_extra


def pyplot() -> ModuleType:
    """matplotlib's pyplot on the non-interactive Agg backend; ImportError naming the ``study``
    extra when matplotlib is missing."""
    try:
        import matplotlib
    except ImportError as err:
        raise missing_extra("study", "plots", err) from err
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
