"""GP benchmark: the protocol-B query loop of our incremental exact posterior against per-query
refits (gpytorch exact GP, the study's NumPy refit, gpytorch's fantasy model), and the memory of
the exact posterior. A thin entry point: runs ``pytest benchmarks/test_gp.py`` with these options
(sizes: :class:`benchmarks.settings.GPSizes`; see docs/gp.md for what is measured).

    python benchmarks/bench_gp.py --threads 1                     # full: the perovskite loop (../shared/data)
    python benchmarks/bench_gp.py --size quick --threads 1        # synthetic 32-d features
    python benchmarks/bench_gp.py --threads 1 --queries 500 -- -k "not small"
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.entry import main  # noqa: E402

if __name__ == "__main__":
    main("gp", __doc__)
