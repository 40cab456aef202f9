"""Framework adapters benchmark: alkernels' baal, modAL and scikit-activeml adapters against each
framework's own strategy on the same pool, selections checked before timing. A thin entry point:
runs ``pytest benchmarks/test_adapters.py`` with these options (see benchmarks/README.md and
benchmarks/test_adapters.py for what is measured; the full size needs about 10 GB of memory).

    python benchmarks/bench_adapters.py --threads 2                      # full size (N = 100,000)
    python benchmarks/bench_adapters.py --size quick --N 5000 -- -k baal
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.entry import main  # noqa: E402

if __name__ == "__main__":
    main("adapters", __doc__)
