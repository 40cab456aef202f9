// pybind11 entry point of alkernels._C. Each kernel family registers its functions here.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "common/isa.h"

namespace py = pybind11;

void bind_acquisition(py::module_& m);
void bind_message_passing(py::module_& m);

PYBIND11_MODULE(_C, m) {
  m.doc() = "alkernels compiled CPU kernels (C++17, OpenMP; no libtorch)";
  m.def("isa_supported", [](const std::string& isa) { return alk::cpu_supports(alk::parse_isa(isa)); },
        py::arg("isa"), "Whether this CPU runs the kernels built for isa ('best', 'avx512', 'avx2', 'baseline').");
  bind_acquisition(m);
  bind_message_passing(m);
}
