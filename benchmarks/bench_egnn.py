"""EGNN benchmark: forward+backward of the fused encoder against the plain-PyTorch backend and
torch_geometric, with initial and trained weights, peak memory, scaling with the batch size, a
training epoch and a pool-scoring pass. A thin entry point: runs
``pytest benchmarks/test_egnn.py`` with these options (see benchmarks/README.md and
benchmarks/test_egnn.py for what is measured).

    python benchmarks/bench_egnn.py --threads 2                            # full size, CPU
    python benchmarks/bench_egnn.py --device cuda --batches 24 256 1024
    python benchmarks/bench_egnn.py --size quick -- -k "not pyg"
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.entry import main  # noqa: E402

if __name__ == "__main__":
    main("egnn", __doc__)
