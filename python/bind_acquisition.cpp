// pybind11 bindings of csrc/acquisition: NumPy buffers in (zero-copy views of CPU tensors),
// NumPy arrays out. The GIL is released while the kernels run.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <algorithm>
#include <stdexcept>
#include <string>

#include "acquisition/acquisition.h"

namespace py = pybind11;

namespace {

alk::acq::LogitType parse_type(const std::string& name) {
  if (name == "float32") return alk::acq::LogitType::kF32;
  if (name == "float16") return alk::acq::LogitType::kF16;
  if (name == "bfloat16") return alk::acq::LogitType::kBF16;
  throw py::value_error("acquisition kernel: unsupported logit type '" + name + "'");
}

// logits: a 3-D array [T, N, C] with any strides (contiguous classes are fastest); bfloat16
// arrives as its int16 bit view.
py::tuple score_all(py::array logits, const std::string& type_name, const std::string& isa_name) {
  const alk::acq::LogitType type = parse_type(type_name);
  const alk::Isa isa = alk::parse_isa(isa_name);
  const py::ssize_t itemsize = type == alk::acq::LogitType::kF32 ? 4 : 2;
  if (logits.ndim() != 3) throw py::value_error("acquisition kernel: logits must be [T, N, C]");
  if (logits.itemsize() != itemsize)
    throw py::value_error("acquisition kernel: element size does not match '" + type_name + "'");
  const int64_t T = logits.shape(0), N = logits.shape(1), C = logits.shape(2);
  if (logits.strides(0) % itemsize != 0 || logits.strides(1) % itemsize != 0 ||
      logits.strides(2) % itemsize != 0)
    throw py::value_error("acquisition kernel: misaligned strides");
  py::array_t<float> out({static_cast<py::ssize_t>(alk::acq::kNumScores), static_cast<py::ssize_t>(N)});
  const void* data = logits.data();
  float* dst = out.mutable_data();
  const int64_t st = logits.strides(0) / itemsize, sn = logits.strides(1) / itemsize;
  const int64_t sc = C > 1 ? logits.strides(2) / itemsize : 1;
  int64_t first_bad;
  {
    py::gil_scoped_release release;
    first_bad = alk::acq::score_all(data, type, T, N, C, st, sn, sc, dst, isa);
  }
  return py::make_tuple(out, first_bad);
}

py::tuple topk_desc(py::array_t<float, py::array::c_style> scores, int64_t k,
                    py::object exclude) {
  const int64_t N = scores.size();
  if (k < 0) throw py::value_error("topk: k must be non-negative");
  py::array_t<uint8_t, py::array::c_style | py::array::forcecast> mask;
  const uint8_t* mask_ptr = nullptr;
  if (!exclude.is_none()) {
    mask = py::array_t<uint8_t, py::array::c_style | py::array::forcecast>(exclude);
    if (mask.size() != N) throw py::value_error("topk: exclude mask length differs from scores");
    mask_ptr = mask.data();
  }
  // At most min(k, N) entries can be selected; the caller gets exactly min(k, selectable).
  const int64_t cap = std::min<int64_t>(k, N);
  py::array_t<int64_t> idx(cap);
  py::array_t<float> val(cap);
  const float* s = scores.data();
  int64_t* ip = idx.mutable_data();
  float* vp = val.mutable_data();
  int64_t valid;
  {
    py::gil_scoped_release release;
    valid = alk::acq::topk_desc(s, N, k, mask_ptr, ip, vp);
  }
  const py::ssize_t kk = static_cast<py::ssize_t>(std::min(k, valid));
  return py::make_tuple(idx[py::slice(0, kk, 1)], val[py::slice(0, kk, 1)], valid);
}

py::array_t<float> exp_le0(py::array_t<float, py::array::c_style | py::array::forcecast> x,
                           const std::string& isa_name) {
  const alk::Isa isa = alk::parse_isa(isa_name);
  py::array_t<float> out(x.size());
  const float* src = x.data();
  float* dst = out.mutable_data();
  {
    py::gil_scoped_release release;
    alk::acq::exp_le0(src, dst, x.size(), isa);
  }
  return out;
}

}  // namespace

void bind_acquisition(py::module_& m) {
  m.def("acq_score_all", &score_all, py::arg("logits"), py::arg("dtype"), py::arg("isa") = "best",
        "All eight acquisition scores in one pass. Returns (float32[8, N], first_bad_index or -1). "
        "isa: 'best' (the widest build this CPU runs), 'avx512', 'avx2' or 'baseline' (the "
        "portable build).");
  m.def("acq_exp", &exp_le0, py::arg("x"), py::arg("isa") = "best",
        "The acquisition kernel's vectorised e^x for x <= 0 (clamped at the build's floor), as a "
        "flat float32 array: for accuracy tests.");
  m.def("acq_topk", &topk_desc, py::arg("scores"), py::arg("k"), py::arg("exclude") = py::none(),
        "Top-k descending, ties to the lower index; NaN and excluded entries skipped. "
        "Returns (int64[k'], float32[k'], number_of_selectable), k' = min(k, selectable).");
}
