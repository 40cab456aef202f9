"""Build of the optional C++ extension ``alkernels._C``.

The kernels in ``csrc/`` are plain C++17 with OpenMP; ``python/`` holds the pybind11
bindings. No libtorch: buffers cross the boundary as NumPy arrays (zero-copy views of CPU
tensors), so pip's isolated build needs only setuptools and pybind11. The extension is marked
optional: if it fails to compile, the package still installs and falls back to the torch backend.
``ALKERNELS_REQUIRE_EXTENSION=1`` makes a failed build an error instead (CI sets it).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from glob import glob

from pybind11.setup_helpers import ParallelCompile, Pybind11Extension, build_ext, has_flag
from setuptools import setup

#: Flags per compiler family (distutils' ``compiler_type``); anything not MSVC takes GCC/Clang's.
COMPILE_ARGS = {
    "msvc": ["/O2", "/openmp"],
    "gcc": ["-O3", "-fopenmp", "-fno-math-errno", "-Wno-psabi"],
}
LINK_ARGS = {"msvc": [], "gcc": ["-fopenmp"]}
#: Extra flags of single source files per compiler family, each passed only where the compiler
#: accepts it. The native bf16 EGNN kernels need AVX512_BF16 (VDPBF16PS); a compiler without
#: -mavx512bf16 builds that file as a stub and precision="bf16" runs emulated on every CPU.
FILE_COMPILE_ARGS = {"csrc/message_passing/mp_avx512bf16.cpp": {"gcc": ["-mavx512bf16"]}}
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("", "0", "false", "no", "off")


def extension_required(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether ``ALKERNELS_REQUIRE_EXTENSION`` asks for a failed extension build to be an error.

    Raises:
        SystemExit: the variable holds something other than 1/true/yes/on or 0/false/no/off.
    """
    value = environ.get("ALKERNELS_REQUIRE_EXTENSION", "").strip().lower()
    if value not in _TRUE + _FALSE:
        raise SystemExit(f"ALKERNELS_REQUIRE_EXTENSION={value!r}: use 1 (the build must succeed) or 0")
    return value in _TRUE


class BuildExt(build_ext):
    """pybind11's ``build_ext`` with optimisation and OpenMP flags chosen for the compiler in use."""

    def build_extensions(self) -> None:
        family = "msvc" if self.compiler.compiler_type == "msvc" else "gcc"
        for extension in self.extensions:
            extension.extra_compile_args += COMPILE_ARGS[family]
            extension.extra_link_args += LINK_ARGS[family]
        self._add_file_flags(family)
        super().build_extensions()

    def _add_file_flags(self, family: str) -> None:
        """Compile the files of :data:`FILE_COMPILE_ARGS` with their extra flags (those the
        compiler accepts), by wrapping the compiler's per-file ``_compile`` (which pybind11's
        ``ParallelCompile`` calls too). MSVC compiles in one call: nothing to add there."""
        compile_one = getattr(self.compiler, "_compile", None)
        if compile_one is None:
            return
        flags = {
            os.path.normpath(src): accepted
            for src, per_family in FILE_COMPILE_ARGS.items()
            if (accepted := [f for f in per_family.get(family, []) if has_flag(self.compiler, f)])
        }
        if not flags:
            return

        def _compile(obj, src, ext, cc_args, extra_postargs, pp_opts):  # noqa: ANN001, ANN202
            extra = flags.get(os.path.normpath(src), [])
            return compile_one(obj, src, ext, cc_args, [*extra_postargs, *extra], pp_opts)

        self.compiler._compile = _compile


if __name__ == "__main__":  # as pip and `python -m build` run it; tests import the helpers above
    # Compile the C++ files in parallel: ALKERNELS_BUILD_JOBS threads, all CPUs by default.
    ParallelCompile("ALKERNELS_BUILD_JOBS", default=0).install()
    ext = Pybind11Extension(
        "alkernels._C",
        sorted(glob("python/*.cpp") + glob("csrc/**/*.cpp", recursive=True)),
        include_dirs=["csrc"],
        # headers and the per-ISA kernel body: an in-place rebuild recompiles when they change
        depends=sorted(glob("csrc/**/*.h", recursive=True) + glob("csrc/**/*.inc", recursive=True)),
        cxx_std=17,
        optional=not extension_required(),
    )
    setup(ext_modules=[ext], cmdclass={"build_ext": BuildExt})
