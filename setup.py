"""Build of the optional C++ extension ``alkernels._C``.

The kernels in ``csrc/`` are plain C++17 with OpenMP; ``python/`` holds the pybind11
bindings. No libtorch: buffers cross the boundary as NumPy arrays (zero-copy views of CPU
tensors), so pip's isolated build needs only setuptools and pybind11. The extension is marked
optional: if it fails to compile, the package still installs and falls back to the torch backend.
"""

from glob import glob

from pybind11.setup_helpers import ParallelCompile, Pybind11Extension, build_ext
from setuptools import setup

# Compile the C++ files in parallel: ALKERNELS_BUILD_JOBS threads, all CPUs by default.
ParallelCompile("ALKERNELS_BUILD_JOBS", default=0).install()

ext = Pybind11Extension(
    "alkernels._C",
    sorted(glob("python/*.cpp") + glob("csrc/**/*.cpp", recursive=True)),
    include_dirs=["csrc"],
    # headers and the per-ISA kernel body: an in-place rebuild recompiles when they change
    depends=sorted(glob("csrc/**/*.h", recursive=True) + glob("csrc/**/*.inc", recursive=True)),
    cxx_std=17,
    extra_compile_args=["-O3", "-fopenmp", "-fno-math-errno", "-Wno-psabi"],
    extra_link_args=["-fopenmp"],
    optional=True,
)

setup(ext_modules=[ext], cmdclass={"build_ext": build_ext})
