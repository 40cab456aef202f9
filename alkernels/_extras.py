"""Optional dependencies, grouped in extras named after what they serve.

A module that needs an extra imports its packages inside ``try`` and turns a failure into
:func:`missing_extra`'s error, so that the message names the extra to install::

    try:
        import ase
    except ImportError as err:
        raise missing_extra("data", __name__, err) from err
"""

from __future__ import annotations

#: Extra name -> the import names of its packages (see pyproject.toml).
EXTRAS: dict[str, tuple[str, ...]] = {
    "data": ("ase", "spglib", "vesin", "pyxtal", "pandas"),
    "study": ("matplotlib", "umap", "pandas", "scipy"),
    "triton": ("triton",),
    "gp": ("gpytorch",),
    "baal": ("baal",),
    "modal": ("modAL",),
    "skactiveml": ("skactiveml", "sklearn"),
    "pymatgen": ("pymatgen",),
}


def missing_extra(extra: str, feature: str, err: ImportError | None = None) -> ImportError:
    """The ImportError to raise when ``feature`` (a module or function name) lacks ``extra``."""
    if extra not in EXTRAS:
        raise ValueError(f"unknown extra {extra!r}")
    cause = f" ({err})" if err is not None else ""
    return ImportError(f"{feature} needs the optional '{extra}' dependencies{cause}: pip install 'alkernels[{extra}]'")
