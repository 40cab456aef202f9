"""Ahead-of-time compilation of every Triton kernel configuration, without a GPU.

``python -m alkernels.ops.aot`` compiles each configuration that a launcher can choose (listed by
``aot_configs()`` in every ``triton_kernels.py``) for the requested architectures with
``triton.compile(ASTSource(...), target=GPUTarget("cuda", arch, 32))``, which runs the ``ptxas``
bundled in the triton wheel, then reads the cubin with the bundled ``cuobjdump``:

* ``--dump-resource-usage``: registers per thread, stack frame and shared memory;
* ``--dump-sass``: local-memory instructions (``LDL``/``STL``: spills) and tensor-core
  instructions (``HMMA`` on sm_70+, ``HGMMA``, i.e. wgmma, on sm_90).

From those it computes the theoretical occupancy (:func:`alkernels.ops.arch.occupancy`, limits in
:data:`alkernels.ops.arch.ARCH_LIMITS`) and prints one row per (kernel, configuration, arch); with
``--json PATH`` it also writes them as JSON. A configuration whose features the architecture
lacks (bf16 below sm_80) is refused by the same check the launchers run, and reported so.
``--check`` exits 1 when any configuration fails its requirements: it must compile, never touch
local memory, reach its ``min_occupancy``, and use tensor-core instructions where it declares
``tensor_cores``.

Compiled cubins are cached under ``~/.cache/alkernels/aot`` (or ``$ALKERNELS_AOT_CACHE``) by a
hash of the kernel source, configuration, architecture and triton version, so a re-run after an
unrelated change takes seconds.

Must run without ``TRITON_INTERPRET=1`` (the interpreter replaces the kernels by Python
functions); the command unsets nothing itself and exits with an error if it is set.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

from alkernels._extras import missing_extra
from alkernels._paths import user_path
from alkernels.ops.arch import ARCH_LIMITS, FEATURES, KernelConfig, check_arch, occupancy

#: Architectures compiled by default: Titan X/Xp, Titan V, A100, H100/H200.
DEFAULT_ARCHS: tuple[int, ...] = (61, 70, 80, 90)
#: Modules whose ``aot_configs()`` list the package's Triton kernels.
FAMILIES: tuple[str, ...] = (
    "alkernels.ops.acquisition.triton_kernels",
    "alkernels.ops.message_passing.triton_kernels",
)


@dataclass
class AotRow:
    """One (kernel, configuration, arch) result. Sizes in bytes; ``status`` is ``"ok"``,
    ``"refused"`` (the launcher's architecture check rejects it; ``error`` says why) or
    ``"failed"`` (the compiler raised; ``error`` holds its last line)."""

    family: str
    kernel: str
    config: str
    arch: int
    num_warps: int
    status: str
    registers: int | None = None
    stack: int | None = None
    local_ldst: int | None = None
    shared: int | None = None
    occupancy: float | None = None
    occupancy_limiter: str | None = None
    tensor_core_instructions: int | None = None
    wgmma_instructions: int | None = None
    tensor_cores_expected: bool = False
    min_occupancy: float = 0.0
    compile_seconds: float | None = None
    cached: bool = False
    error: str | None = None
    sass_error: str | None = None

    def problems(self) -> list[str]:
        """Why this row fails the AOT requirements (empty when it passes or was refused)."""
        if self.status == "refused":
            return []
        if self.status != "ok":
            return [f"does not compile: {self.error}"]
        out = []
        if self.local_ldst or self.stack:
            out.append(f"uses local memory (stack {self.stack} B, {self.local_ldst} LDL/STL)")
        if self.occupancy is not None and self.occupancy < self.min_occupancy:
            out.append(f"occupancy {self.occupancy:.0%} < {self.min_occupancy:.0%} ({self.occupancy_limiter})")
        if self.sass_error is not None:
            if self.tensor_cores_expected:
                out.append(f"SASS unreadable, tensor cores unchecked ({self.sass_error})")
        elif self.tensor_cores_expected and not (self.tensor_core_instructions or self.wgmma_instructions):
            out.append("no tensor-core instructions (HMMA/HGMMA) in SASS")
        return out


def _triton():
    try:
        import triton
        from triton.backends.compiler import GPUTarget
        from triton.compiler import ASTSource
    except ImportError as err:
        raise missing_extra("triton", "alkernels.ops.aot", err) from err
    return triton, ASTSource, GPUTarget


def all_configs(families: Iterable[str] = FAMILIES) -> list[KernelConfig]:
    """The :class:`KernelConfig` list of every family module."""
    import importlib

    configs: list[KernelConfig] = []
    for name in families:
        configs.extend(importlib.import_module(name).aot_configs())
    return configs


def _tool(name: str) -> str:
    triton, _, _ = _triton()
    path = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / name
    if not path.exists():
        raise FileNotFoundError(f"{name} is not bundled with this triton ({path})")
    return str(path)


def cache_dir() -> Path:
    """Where cubins are cached: ``$ALKERNELS_AOT_CACHE`` (``~`` expanded) or
    ``~/.cache/alkernels/aot``."""
    return user_path(os.environ.get("ALKERNELS_AOT_CACHE", Path.home() / ".cache" / "alkernels" / "aot"))


def _key(cfg: KernelConfig, arch: int) -> str:
    triton, _, _ = _triton()
    fn = cfg.fn
    parts = [
        triton.__version__,
        getattr(fn, "cache_key", ""),
        cfg.kernel,
        json.dumps(cfg.signature, sort_keys=True),
        json.dumps(cfg.constexprs, sort_keys=True, default=str),
        str(cfg.num_warps),
        str(cfg.num_stages),
        ",".join(cfg.aligned),
        str(arch),
    ]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:32]


def compile_cubin(cfg: KernelConfig, arch: int) -> tuple[bytes, bool]:
    """The cubin of ``cfg`` for ``arch`` (from the cache when present): (bytes, cached)."""
    path = cache_dir() / f"{cfg.kernel}-sm{arch}-{_key(cfg, arch)}.cubin"
    if path.exists():
        return path.read_bytes(), True
    triton, ASTSource, GPUTarget = _triton()
    names = list(cfg.fn.arg_names)
    attrs = {(names.index(a),): [["tt.divisibility", 16]] for a in cfg.aligned}
    src = ASTSource(fn=cfg.fn, signature=cfg.signature, constexprs=cfg.constexprs, attrs=attrs)
    options = {"num_warps": cfg.num_warps, "num_stages": cfg.num_stages, "enable_fp_fusion": True}
    compiled = triton.compile(src, target=GPUTarget("cuda", arch, 32), options=options)
    cubin = compiled.asm["cubin"]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_bytes(cubin)
    os.replace(tmp, path)
    return cubin, False


_RES = re.compile(r"REG:(\d+)\s+STACK:(\d+)\s+SHARED:(\d+)\s+LOCAL:(\d+)")


def inspect_cubin(cubin: bytes) -> dict[str, int]:
    """Registers, stack, shared memory, local-memory and tensor-core instruction counts of the
    one kernel in ``cubin`` (read with the bundled cuobjdump)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "k.cubin"
        path.write_bytes(cubin)
        usage = subprocess.run(
            [_tool("cuobjdump"), "--dump-resource-usage", str(path)], capture_output=True, text=True, check=True
        ).stdout
        sass = subprocess.run([_tool("cuobjdump"), "--dump-sass", str(path)], capture_output=True, text=True)
    match = _RES.search(usage)
    if match is None:
        raise RuntimeError(f"cannot read cuobjdump's resource usage:\n{usage}")
    reg, stack, shared, local = (int(g) for g in match.groups())
    info: dict = {"registers": reg, "stack": stack + local, "shared": shared}
    if sass.returncode != 0:
        # e.g. the CUDA 13 disassembler bundled with newer triton no longer reads sm_61/sm_70
        # cubins (ptxas still writes them): resource usage only
        msg = [ln for ln in (sass.stderr + sass.stdout).splitlines() if "fatal" in ln or "error" in ln.lower()]
        info.update(
            local_ldst=None, hmma=None, hgmma=None, sass_error=(msg or ["cuobjdump --dump-sass failed"])[-1].strip()
        )
        return info
    ops = re.findall(r"^\s+/\*[0-9a-f]{4,}\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_]*)", sass.stdout, flags=re.M)
    info.update(
        local_ldst=sum(op in ("LDL", "STL") for op in ops),
        hmma=sum(op == "HMMA" for op in ops),
        hgmma=sum(op == "HGMMA" for op in ops),
        sass_error=None,
    )
    return info


def run_config(cfg: KernelConfig, arch: int) -> AotRow:
    """Compile and inspect one configuration for one architecture."""
    row = AotRow(
        cfg.family,
        cfg.kernel,
        cfg.label,
        arch,
        cfg.num_warps,
        "ok",
        tensor_cores_expected=cfg.tensor_cores,
        min_occupancy=cfg.min_occupancy,
    )
    try:
        check_arch(cfg.features, arch, cfg.kernel)
    except ValueError as err:
        row.status, row.error = "refused", str(err)
        return row
    t0 = time.perf_counter()
    try:
        cubin, row.cached = compile_cubin(cfg, arch)
    except Exception as err:  # the compiler's own exception types vary across triton versions
        lines = [ln for ln in str(err).strip().splitlines() if ln.strip()] or [type(err).__name__]
        row.status, row.error = "failed", f"{type(err).__name__}: {lines[-1][:300]}"
        return row
    row.compile_seconds = round(time.perf_counter() - t0, 3)
    info = inspect_cubin(cubin)
    row.registers, row.stack, row.shared = info["registers"], info["stack"], info["shared"]
    row.local_ldst = info["local_ldst"]
    row.tensor_core_instructions, row.wgmma_instructions = info["hmma"], info["hgmma"]
    row.sass_error = info["sass_error"]
    occ = occupancy(arch, row.registers, row.shared, cfg.num_warps)
    row.occupancy, row.occupancy_limiter = round(occ.fraction, 4), occ.limiter
    return row


def _run_indexed(families: tuple[str, ...], index: int, arch: int) -> AotRow:
    """Worker of :func:`run`: the configurations hold jit functions, which do not pickle, so a
    worker process rebuilds the list and picks its entry."""
    return run_config(all_configs(families)[index], arch)


def run(
    archs: Iterable[int] = DEFAULT_ARCHS,
    families: Iterable[str] = FAMILIES,
    kernels: Iterable[str] | None = None,
    jobs: int = 1,
    progress: bool = False,
) -> list[AotRow]:
    """Compile every configuration of ``families`` (optionally only the named ``kernels``) for
    every arch of ``archs``; one :class:`AotRow` each, in a fixed order. ``jobs`` > 1 compiles
    in that many worker processes (compilation is CPU-bound).

    Raises:
        ValueError: an unknown architecture, or a kernel name that no configuration of
            ``families`` has (the message lists the known ones).
    """
    for arch in archs:
        if arch not in ARCH_LIMITS:
            raise ValueError(f"unknown architecture sm_{arch}; known: {', '.join(f'sm_{a}' for a in ARCH_LIMITS)}")
    _triton()  # the ImportError names the extra
    families = tuple(families)
    configs = all_configs(families)
    wanted = None if kernels is None else set(kernels)
    known = sorted({cfg.kernel for cfg in configs})
    unknown = sorted(set() if wanted is None else wanted - set(known))
    if unknown:
        raise ValueError(f"unknown kernel(s) {', '.join(unknown)}; known: {', '.join(known)}")
    work = [
        (i, arch)
        for arch in archs
        for i, cfg in enumerate(configs)
        if cfg.chosen_on(arch) and (wanted is None or cfg.kernel in wanted)
    ]
    from alkernels._logging import progress_bar

    bar = progress_bar(total=len(work), enabled=progress, desc="aot", leave=False)
    if jobs <= 1:
        rows = []
        for i, arch in work:
            rows.append(run_config(configs[i], arch))
            bar.update(1)
    else:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = [pool.submit(_run_indexed, families, i, arch) for i, arch in work]
            rows = []
            for fut in futures:
                rows.append(fut.result())
                bar.update(1)
    bar.close()
    return rows


def table(rows: list[AotRow]) -> str:
    """A fixed-width text table of ``rows``."""
    head = (
        "kernel",
        "config",
        "arch",
        "warps",
        "regs",
        "stack",
        "LDL/STL",
        "smem",
        "occupancy",
        "HMMA",
        "HGMMA",
        "status",
    )
    lines = [head]
    for r in rows:
        if r.status != "ok":
            lines.append((r.kernel, r.config, f"sm_{r.arch}", str(r.num_warps), *("-",) * 7, f"{r.status}: {r.error}"))
            continue
        occ = f"{r.occupancy:.0%} ({r.occupancy_limiter})"
        tc = (str(r.tensor_core_instructions), str(r.wgmma_instructions)) if r.tensor_cores_expected else ("-", "-")
        if r.sass_error is not None:
            tc = ("n/a", "n/a")
        verdict = "; ".join(r.problems()) or "ok"
        lines.append(
            (
                r.kernel,
                r.config,
                f"sm_{r.arch}",
                str(r.num_warps),
                str(r.registers),
                str(r.stack),
                "n/a" if r.local_ldst is None else str(r.local_ldst),
                str(r.shared),
                occ,
                *tc,
                verdict + (" (no SASS: resource usage only)" if r.sass_error else ""),
            )
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(head) - 1)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(line, widths)) + "  " + line[-1] for line in lines)


def limits_table() -> list[dict]:
    """The architecture limits used for occupancy, as JSON-ready dicts."""
    return [{"arch": a, **asdict(lim)} for a, lim in ARCH_LIMITS.items()]


def report(rows: list[AotRow]) -> dict:
    """The JSON document of an AOT run: rows, limits, features, versions and date."""
    triton, _, _ = _triton()
    return {
        "benchmark": "aot",
        "description": "Triton kernels compiled ahead of time for each GPU architecture: registers, "
        "stack/local memory, shared memory, theoretical occupancy and tensor-core instructions per "
        "(kernel, configuration, arch), read from the cubin with cuobjdump.",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "versions": {"python": platform.python_version(), "triton": triton.__version__},
        "arch_limits": limits_table(),
        "features": FEATURES,
        "rows": [asdict(r) for r in rows],
        "problems": {f"{r.kernel} [{r.config}] sm_{r.arch}": r.problems() for r in rows if r.problems()},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m alkernels.ops.aot", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--arch",
        type=int,
        nargs="+",
        default=list(DEFAULT_ARCHS),
        help="compute capabilities as major*10+minor (default: 61 70 80 90)",
    )
    parser.add_argument("--kernel", nargs="+", default=None, help="only these kernels (by function name)")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows as JSON here")
    parser.add_argument("--jobs", type=int, default=1, help="compile in this many processes (default 1)")
    parser.add_argument(
        "--check",
        action="store_true",
        help="exit 1 when a configuration fails (compile, local memory, occupancy, tensor cores)",
    )
    args = parser.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET", "0") == "1":
        parser.error("unset TRITON_INTERPRET: the interpreter replaces the kernels and nothing compiles")
    try:
        rows = run(args.arch, kernels=args.kernel, jobs=args.jobs, progress=sys.stderr.isatty())
    except ValueError as err:
        parser.error(str(err))
    print(table(rows))
    doc = report(rows)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(doc, indent=1) + "\n")
    if doc["problems"]:
        print(f"\n{len(doc['problems'])} configuration(s) fail the AOT requirements", file=sys.stderr)
        return 1 if args.check else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
