"""Acquisition scoring benchmark: fused ``select`` / ``score_all`` + top-k against eager PyTorch,
``torch.compile`` and baal on logits [T, N, C], with memcpy bandwidth, peak memory and scaling
with N. A thin entry point: runs ``pytest benchmarks/test_acquisition.py`` with these options
(see benchmarks/README.md and benchmarks/test_acquisition.py for what is measured).

    python benchmarks/bench_acquisition.py --threads 2                     # full size, CPU
    python benchmarks/bench_acquisition.py --threads 1 --commit   # benchmarks/results/acquisition_cpu_1t_full.json
    python benchmarks/bench_acquisition.py --size quick --N 50000 -- -k "not baal"
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.entry import main  # noqa: E402

if __name__ == "__main__":
    main("acquisition", __doc__)
