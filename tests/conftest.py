"""Fixtures shared by the test modules (helpers without pytest state live in ``helpers.py``)."""

from __future__ import annotations

import pytest
import torch

from helpers import CRYSTALS


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models run fastest, and steadiest on a busy machine, on one thread."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def crystal_dir(tmp_path_factory):
    """A folder of 24 CIFs: the crystals above at three lattice constants each."""
    import ase.io
    from ase.build import bulk

    folder = tmp_path_factory.mktemp("cifs")
    k = 0
    for scale in (0.97, 1.0, 1.03):
        for formula, kind, a in CRYSTALS:
            ase.io.write(folder / f"{k:02d}-{formula}.cif", bulk(formula, kind, a=a * scale))
            k += 1
    return folder
