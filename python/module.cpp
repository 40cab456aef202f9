// pybind11 entry point of alkernels._C. Each kernel family registers its functions here.
#include <pybind11/pybind11.h>

namespace py = pybind11;

void bind_acquisition(py::module_& m);
void bind_message_passing(py::module_& m);

PYBIND11_MODULE(_C, m) {
  m.doc() = "alkernels compiled CPU kernels (C++17, OpenMP; no libtorch)";
  bind_acquisition(m);
  bind_message_passing(m);
}
