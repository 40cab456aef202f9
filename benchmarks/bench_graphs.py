"""Graph-building benchmark: alkernels' ``build_graphs`` (vesin) against ASE's neighbour list,
with worker processes and end to end into the on-disk cache. A thin entry point: runs
``pytest benchmarks/test_graphs.py`` with these options (see benchmarks/README.md and
benchmarks/test_graphs.py for what is measured).

    python benchmarks/bench_graphs.py --n 2000 --ase-n 400 --total 100000 --workers 2
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.entry import main  # noqa: E402

if __name__ == "__main__":
    main("graphs", __doc__)
