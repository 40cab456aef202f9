"""Error of the acquisition kernel's vectorised exp, over every float32 argument it is used on.

The C++ acquisition kernel evaluates e^d for d = x - max(x) <= 0 with one polynomial shared by
its builds (``simd::exp_le0`` in ``csrc/common/simd.h``). This script runs each build the CPU has
(through ``alkernels._C.acq_exp``) on every float32 d from -0 down to the lowest d whose result
is still a normal float32 in that build (the AVX2 and baseline builds clamp at -125 ln 2, the
AVX-512 build rounds to float32's subnormals below -87.34), and compares with float64 ``exp``.
It prints the largest relative error (over the whole range, and over d >= -16, where e^d >= 1.1e-7
can still move a float32 sum that holds the top class's 1) and the largest error in float32 ulps
of the exact value.

    python benchmarks/exp_accuracy.py [--stride 1] [--isa avx512 avx2 baseline]

``--stride k`` checks every k-th float only (1, the default, is exhaustive: ~1.1e9 values per
build, about a minute each on one core).
"""

from __future__ import annotations

import argparse
import math

import numpy as np

from alkernels.ops.dispatch import ext

#: Lowest d per build: float32(-125 ln 2) for the builds that clamp there, else the lowest d with
#: e^d >= 2^-126 (the smallest normal float32).
LOWEST = {
    "avx512": float(np.nextafter(np.float32(-126 * math.log(2)), np.float32(0))),
    "avx2": float(np.float32(-125 * math.log(2))),
    "baseline": float(np.float32(-125 * math.log(2))),
}
CHUNK = 1 << 24
#: Arguments from here up to 0 get a separate maximum.
NEAR = -16.0


def measure(isa: str, stride: int) -> tuple[float, float, float, float, float, int]:
    """(max relative error, its d, the same over d >= NEAR, max ulp error, its d, values checked)."""
    last = int(np.array([LOWEST[isa]], dtype=np.float32).view(np.uint32)[0])
    first = 0x80000000  # -0.0; larger bit patterns are more negative floats
    worst_rel = worst_ulp = worst_near = 0.0
    at_rel = at_ulp = 0.0
    count = 0
    for start in range(first, last + 1, CHUNK * stride):
        bits = np.arange(start, min(start + CHUNK * stride, last + 1), stride, dtype=np.uint64).astype(np.uint32)
        d = bits.view(np.float32)
        got = ext().acq_exp(d, isa).astype(np.float64)
        want = np.exp(d.astype(np.float64))
        err = np.abs(got - want)
        rel = err / want
        ulp = err / np.spacing(want.astype(np.float32)).astype(np.float64)
        i, j = int(np.argmax(rel)), int(np.argmax(ulp))
        near = d >= NEAR
        if near.any():
            worst_near = max(worst_near, float(rel[near].max()))
        if rel[i] > worst_rel:
            worst_rel, at_rel = float(rel[i]), float(d[i])
        if ulp[j] > worst_ulp:
            worst_ulp, at_ulp = float(ulp[j]), float(d[j])
        count += len(d)
    return worst_rel, at_rel, worst_near, worst_ulp, at_ulp, count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stride", type=int, default=1)
    parser.add_argument("--isa", nargs="+", default=["avx512", "avx2", "baseline"])
    args = parser.parse_args()
    for isa in args.isa:
        if not ext().isa_supported(isa):
            print(f"{isa}: not supported by this CPU")
            continue
        rel, at_rel, near, ulp, at_ulp, count = measure(isa, args.stride)
        print(
            f"{isa}: d in [{LOWEST[isa]:.6g}, 0], {count:,} values: max relative error {rel:.3e} "
            f"(d = {at_rel:.9g}); {near:.3e} for d >= {NEAR:g}; max {ulp:.3f} ulp (d = {at_ulp:.9g})"
        )


if __name__ == "__main__":
    main()
