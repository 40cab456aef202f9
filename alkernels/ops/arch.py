"""GPU architectures: what each one can run, its per-multiprocessor limits, and occupancy.

The Triton launchers call :func:`check_arch` before compiling, so that a kernel needing a
feature the GPU lacks (bfloat16 or TF32 matmul inputs below sm_80) fails with a clear
``ValueError`` instead of a compiler error. :mod:`alkernels.ops.aot` uses the same tables to
refuse those configurations ahead of time and to turn the registers and shared memory that
``ptxas`` allocated into a theoretical occupancy.

Every Triton kernel family lists the configurations its launcher can choose as
:class:`KernelConfig` records (``aot_configs()`` in each ``triton_kernels.py``), so the
ahead-of-time check compiles exactly what the launchers run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass(frozen=True)
class ArchLimits:
    """Per-multiprocessor resource limits of one compute capability (CUDA programming guide,
    "Technical Specifications per Compute Capability").

    Attributes:
        name: a GPU of this architecture, for reports.
        max_threads: resident threads per SM.
        max_blocks: resident blocks per SM.
        registers: 32-bit registers per SM.
        max_regs_per_thread: registers one thread can address.
        reg_unit: registers are allocated per warp in multiples of this.
        smem: shared memory per SM usable by blocks, bytes (the largest carve-out).
        smem_per_block: largest shared memory one block may use, bytes (opt-in above 48 KB).
        smem_unit: shared memory allocation granularity, bytes.
        smem_reserved: shared memory the runtime reserves per block, bytes.
    """

    name: str
    max_threads: int
    max_blocks: int
    registers: int
    max_regs_per_thread: int
    reg_unit: int
    smem: int
    smem_per_block: int
    smem_unit: int
    smem_reserved: int

    @property
    def max_warps(self) -> int:
        """Resident warps per SM."""
        return self.max_threads // 32


KB = 1024
#: Limits per compute capability (major * 10 + minor) of the architectures the project targets.
ARCH_LIMITS: dict[int, ArchLimits] = {
    61: ArchLimits("Titan X/Xp (Pascal)", 2048, 32, 65536, 255, 256, 96 * KB, 48 * KB, 256, 0),
    70: ArchLimits("Titan V / V100 (Volta)", 2048, 32, 65536, 255, 256, 96 * KB, 96 * KB, 256, 0),
    80: ArchLimits("A100 (Ampere)", 2048, 32, 65536, 255, 256, 164 * KB, 163 * KB, 128, 1 * KB),
    90: ArchLimits("H100/H200 (Hopper)", 2048, 32, 65536, 255, 256, 228 * KB, 227 * KB, 128, 1 * KB),
}

#: Kernel features and the lowest compute capability that has them.
FEATURES: dict[str, int] = {
    "bf16": 80,  # bfloat16 tensor-core matmul inputs (and native bf16 conversions)
    "tf32": 80,  # TF32 tensor-core matmul inputs
}


def arch_of(device: torch.device | str | int) -> int:
    """Compute capability of a CUDA ``device`` as major * 10 + minor (e.g. 90 for an H100)."""
    major, minor = torch.cuda.get_device_capability(device)
    return 10 * major + minor


def check_arch(features: tuple[str, ...] | list[str], arch: int, op: str) -> None:
    """Raise ValueError when compute capability ``arch`` lacks one of ``features`` (names of
    :data:`FEATURES`); ``op`` names the caller in the message."""
    for feat in features:
        need = FEATURES[feat]
        if arch < need:
            raise ValueError(
                f"{op}: {feat} needs a GPU of compute capability {need // 10}.{need % 10} or newer "
                f"(sm_{need}); this one is sm_{arch}. Use precision='fp32' on this GPU."
            )


def check_device(features: tuple[str, ...] | list[str], device: torch.device, op: str) -> None:
    """:func:`check_arch` for the GPU of ``device``; nothing to check for CPU tensors (the
    Triton interpreter emulates every feature)."""
    if device.type == "cuda" and features:
        check_arch(features, arch_of(device), op)


@dataclass(frozen=True)
class Occupancy:
    """Theoretical occupancy of a kernel on one architecture.

    Attributes:
        blocks: resident blocks per SM.
        warps: resident warps per SM.
        fraction: ``warps / max_warps``.
        limiter: what caps it: ``"registers"``, ``"shared memory"``, ``"warps"`` or ``"blocks"``.
    """

    blocks: int
    warps: int
    fraction: float
    limiter: str


def occupancy(arch: int, registers: int, smem_bytes: int, num_warps: int) -> Occupancy:
    """Resident blocks and warps per SM for a kernel of ``num_warps`` warps per block that uses
    ``registers`` per thread and ``smem_bytes`` of shared memory per block, on ``arch``.

    Registers are allocated per warp in units of ``reg_unit``; shared memory per block in units of
    ``smem_unit`` plus the runtime's reserve. The smallest of the four caps wins.
    """
    lim = ARCH_LIMITS[arch]
    regs_per_warp = -(-max(registers, 1) * 32 // lim.reg_unit) * lim.reg_unit
    caps = {
        "registers": (lim.registers // regs_per_warp) // num_warps,
        "warps": lim.max_warps // num_warps,
        "blocks": lim.max_blocks,
    }
    if smem_bytes > 0:
        per_block = -(-(smem_bytes + lim.smem_reserved) // lim.smem_unit) * lim.smem_unit
        caps["shared memory"] = lim.smem // per_block if smem_bytes <= lim.smem_per_block else 0
    limiter = min(caps, key=lambda k: caps[k])
    blocks = caps[limiter]
    return Occupancy(blocks, blocks * num_warps, blocks * num_warps / lim.max_warps, limiter)


@dataclass(frozen=True)
class KernelConfig:
    """One compilation of a Triton kernel that a launcher can choose.

    Attributes:
        family: op family (``"acquisition"``, ``"message_passing"``).
        kernel: the kernel's name.
        label: what selects this configuration, e.g. ``"C<=256 float32"`` or ``"bf16 H=128 C=64"``.
        fn: the ``triton.jit`` function.
        signature: Triton type of every runtime argument (``"*fp32"``, ``"i32"``, ...), by name.
        constexprs: value of every ``tl.constexpr`` argument, by name.
        num_warps: warps per program.
        num_stages: software-pipelining depth.
        features: :data:`FEATURES` the configuration needs (refused below their architecture).
        tensor_cores: the kernel's matmuls are meant to run on tensor cores (checked in SASS).
        min_occupancy: the occupancy the configuration must reach (0 for no requirement).
        aligned: argument names whose values are 16-byte aligned at every launch (pointers the
            launcher allocates or makes contiguous), compiled with Triton's divisibility hint as
            the runtime specialisation would.
        from_arch: the launcher chooses this configuration from this architecture on ...
        below_arch: ... up to (excluding) this one, or every newer one when None (a precision
            mode that maps to different instructions per architecture has one record per range).
    """

    family: str
    kernel: str
    label: str
    fn: Any
    signature: dict[str, str]
    constexprs: dict[str, Any]
    num_warps: int
    num_stages: int = 1
    features: tuple[str, ...] = ()
    tensor_cores: bool = False
    min_occupancy: float = 0.0
    aligned: tuple[str, ...] = field(default=())
    from_arch: int = 0
    below_arch: int | None = None

    def chosen_on(self, arch: int) -> bool:
        """Whether the launcher picks this configuration on compute capability ``arch``."""
        return self.from_arch <= arch and (self.below_arch is None or arch < self.below_arch)
