// pybind11 bindings of the fused EGNN edge kernels (csrc/message_passing). Arrays cross as
// C-contiguous NumPy arrays (zero-copy views of CPU tensors); shapes, dtypes and every index
// value are checked here so that bad input raises ValueError instead of reaching the kernels.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <string>
#include <vector>

#include "message_passing/message_passing.h"

namespace py = pybind11;

namespace {

constexpr int kNumWeights = 9;  // W2, b2, W3, b3, Wx1, bx1, Wx2, bx2, wx3

void require(bool ok, const std::string& msg) {
  if (!ok) throw py::value_error(msg);
}

template <typename T>
const T* data_of(const py::array& a, const char* name, std::vector<py::ssize_t> shape) {
  require(a.dtype().is(py::dtype::of<T>()),
          std::string(name) + ": dtype differs from the other floating inputs");
  require((a.flags() & py::array::c_style) != 0, std::string(name) + " must be C-contiguous");
  require(a.ndim() == static_cast<py::ssize_t>(shape.size()),
          std::string(name) + ": wrong number of dimensions");
  for (size_t d = 0; d < shape.size(); ++d)
    require(a.shape(d) == shape[d], std::string(name) + ": wrong shape");
  return static_cast<const T*>(a.data());
}

// Python's precision= of the C++ kernels: "fp32" or "bf16" ("tf32" is a Triton mode only).
alk::mp::Precision parse_precision(const std::string& name) {
  if (name == "fp32") return alk::mp::Precision::kFp32;
  if (name == "bf16") return alk::mp::Precision::kBf16;
  if (name == "tf32")
    throw py::value_error("precision='tf32' is a Triton (GPU) mode; the C++ CPU kernels run 'fp32' or 'bf16'");
  throw py::value_error("precision must be 'fp32' or 'bf16', got '" + name + "'");
}

const int64_t* index_of(const py::array& a, const char* name, py::ssize_t len) {
  require(a.dtype().is(py::dtype::of<int64_t>()), std::string(name) + " must be int64");
  require((a.flags() & py::array::c_style) != 0 && a.ndim() == 1 && a.shape(0) == len,
          std::string(name) + ": must be a contiguous 1-D array of length " + std::to_string(len));
  return static_cast<const int64_t*>(a.data());
}

template <typename T>
py::array_t<T> empty(std::vector<py::ssize_t> shape) {
  return py::array_t<T>(shape);
}

// The index arrays in O(n + E), so that no kernel reads or writes out of bounds: rowptr runs from
// 0 to E without decreasing, every edge of receiver i's segment has dst == i, every src lies in
// [0, n). ValueError names the first violation (the message is built only then: these loops run
// on every call).
void check_receivers(const int64_t* rowptr, const int64_t* src, const int64_t* dst, int64_t n,
                     int64_t E) {
  if (rowptr[0] != 0 || rowptr[n] != E)
    throw py::value_error("rowptr must start at 0 and end at E = " + std::to_string(E));
  for (int64_t i = 0; i < n; ++i) {
    if (rowptr[i] > rowptr[i + 1])
      throw py::value_error("rowptr must be non-decreasing (at node " + std::to_string(i) + ")");
    for (int64_t e = rowptr[i]; e < rowptr[i + 1]; ++e)
      if (dst[e] != i)
        throw py::value_error("edge " + std::to_string(e) + " has receiver " + std::to_string(dst[e]) +
                              " but lies in node " + std::to_string(i) + "'s rowptr segment");
  }
  for (int64_t e = 0; e < E; ++e)
    if (src[e] < 0 || src[e] >= n)
      throw py::value_error("edge " + std::to_string(e) + " has sender " + std::to_string(src[e]) +
                            " outside [0, " + std::to_string(n) + ")");
}

// The CSR over senders in O(n + E): src_ptr runs from 0 to E without decreasing, src_perm is a
// permutation of the edges, and the edges of sender j's segment have src == j.
void check_senders(const int64_t* src_ptr, const int64_t* src_perm, const int64_t* src, int64_t n,
                   int64_t E) {
  if (src_ptr[0] != 0 || src_ptr[n] != E)
    throw py::value_error("src_ptr must start at 0 and end at E = " + std::to_string(E));
  std::vector<char> seen(static_cast<size_t>(E), 0);
  for (int64_t j = 0; j < n; ++j) {
    if (src_ptr[j] > src_ptr[j + 1])
      throw py::value_error("src_ptr must be non-decreasing (at node " + std::to_string(j) + ")");
    for (int64_t p = src_ptr[j]; p < src_ptr[j + 1]; ++p) {
      const int64_t e = src_perm[p];
      if (e < 0 || e >= E || seen[e])
        throw py::value_error("src_perm must be a permutation of the edges (position " + std::to_string(p) + ")");
      seen[e] = 1;
      if (src[e] != j)
        throw py::value_error("src_perm puts edge " + std::to_string(e) + " (sender " + std::to_string(src[e]) +
                              ") in node " + std::to_string(j) + "'s segment");
    }
  }
}

// Fills the EdgeArgs from the Python arguments, checking every shape.
template <typename T>
alk::mp::EdgeArgs<T> unpack(const py::array& A, const py::array& B, const py::array& w,
                           const py::array& x, const py::array& shift, const py::array& src,
                           const py::array& dst, const py::array& rowptr, const py::list& wl,
                           double eps) {
  require(A.ndim() == 2, "A must be [n, H]");
  require(wl.size() == kNumWeights, "weights must hold 9 arrays");
  const py::ssize_t n = A.shape(0), H = A.shape(1), E = src.ndim() == 1 ? src.shape(0) : -1;
  const py::array wx1 = wl[4];  // [C, H]
  require(wx1.ndim() == 2, "Wx1 must be [C, H]");
  const py::ssize_t C = wx1.shape(0);
  require(H % 16 == 0 && C % 16 == 0, "edge and coordinate widths must be multiples of 16");
  alk::mp::EdgeArgs<T> a{};
  a.n = n; a.E = E; a.H = H; a.C = C; a.F = 0;
  a.A = data_of<T>(A, "A", {n, H});
  a.B = data_of<T>(B, "B", {n, H});
  a.w = data_of<T>(w, "w", {H});
  a.x = data_of<T>(x, "x", {n, 3});
  a.shift = data_of<T>(shift, "shift", {E, 3});
  a.src = index_of(src, "src", E);
  a.dst = index_of(dst, "dst", E);
  a.rowptr = index_of(rowptr, "rowptr", n + 1);
  a.W2 = data_of<T>(wl[0], "W2", {H, H});
  a.b2 = data_of<T>(wl[1], "b2", {H});
  a.W3 = data_of<T>(wl[2], "W3", {H, H});
  a.b3 = data_of<T>(wl[3], "b3", {H});
  a.Wx1 = data_of<T>(wl[4], "Wx1", {C, H});
  a.bx1 = data_of<T>(wl[5], "bx1", {C});
  a.Wx2 = data_of<T>(wl[6], "Wx2", {C, C});
  a.bx2 = data_of<T>(wl[7], "bx2", {C});
  a.wx3 = data_of<T>(wl[8], "wx3", {C});
  a.eps = static_cast<T>(eps);
  check_receivers(a.rowptr, a.src, a.dst, n, E);
  return a;
}

// The backward's inputs beyond the forward's (upstream gradients, h, W1a, the sender CSR), checked
// and filled into g; sets a.F. Shared by the backward and the double backward.
template <typename T>
void unpack_backward(alk::mp::EdgeArgs<T>& a, alk::mp::EdgeGrads<T>& g, const py::array& gm,
                     const py::array& gdx, const py::array& h, const py::array& W1a,
                     const py::array& src_perm, const py::array& src_ptr, bool detach_norm) {
  require(h.ndim() == 2 && h.shape(0) == a.n, "h must be [n, F]");
  const py::ssize_t n = a.n, H = a.H, F = h.shape(1);
  require(F % 16 == 0, "the node width F must be a multiple of 16");
  a.F = F;
  g.gm = data_of<T>(gm, "grad_m", {n, H});
  g.gdx = data_of<T>(gdx, "grad_dx", {n, 3});
  g.h = data_of<T>(h, "h", {n, F});
  g.W1a = data_of<T>(W1a, "W1a", {H, F});
  g.src_perm = index_of(src_perm, "src_perm", a.E);
  g.src_ptr = index_of(src_ptr, "src_ptr", n + 1);
  check_senders(g.src_ptr, g.src_perm, a.src, n, a.E);
  g.detach_norm = detach_norm;
}

template <typename T>
py::tuple forward_t(const py::array& A, const py::array& B, const py::array& w,
                    const py::array& x, const py::array& shift, const py::array& src,
                    const py::array& dst, const py::array& rowptr, const py::list& wl,
                    double eps, alk::Isa isa, alk::mp::Precision precision) {
  const auto a = unpack<T>(A, B, w, x, shift, src, dst, rowptr, wl, eps);
  auto m = empty<T>({a.n, a.H});
  auto dx = empty<T>({a.n, 3});
  T* pm = m.mutable_data();
  T* pdx = dx.mutable_data();
  {
    py::gil_scoped_release release;
    alk::mp::edge_forward<T>(a, pm, pdx, isa, precision);
  }
  return py::make_tuple(m, dx);
}

template <typename T>
py::tuple backward_t(const py::array& A, const py::array& B, const py::array& w,
                     const py::array& x, const py::array& shift, const py::array& src,
                     const py::array& dst, const py::array& rowptr, const py::list& wl,
                     double eps, const py::array& gm, const py::array& gdx, const py::array& h,
                     const py::array& W1a, const py::array& src_perm, const py::array& src_ptr,
                     bool detach_norm, alk::Isa isa, alk::mp::Precision precision) {
  auto a = unpack<T>(A, B, w, x, shift, src, dst, rowptr, wl, eps);
  alk::mp::EdgeGrads<T> g{};
  unpack_backward(a, g, gm, gdx, h, W1a, src_perm, src_ptr, detach_norm);
  const py::ssize_t n = a.n, H = a.H, C = a.C, F = a.F;
  auto gB = empty<T>({n, H});
  auto gh = empty<T>({n, F});
  auto gx = empty<T>({n, 3});
  auto gW1a = empty<T>({H, F});
  auto gw = empty<T>({H});
  auto gW2 = empty<T>({H, H});
  auto gb2 = empty<T>({H});
  auto gW3 = empty<T>({H, H});
  auto gb3 = empty<T>({H});
  auto gWx1 = empty<T>({C, H});
  auto gbx1 = empty<T>({C});
  auto gWx2 = empty<T>({C, C});
  auto gbx2 = empty<T>({C});
  auto gwx3 = empty<T>({C});
  g.gB = gB.mutable_data(); g.gh = gh.mutable_data(); g.gx = gx.mutable_data();
  g.gW1a = gW1a.mutable_data(); g.gw = gw.mutable_data();
  g.gW2 = gW2.mutable_data(); g.gb2 = gb2.mutable_data();
  g.gW3 = gW3.mutable_data(); g.gb3 = gb3.mutable_data();
  g.gWx1 = gWx1.mutable_data(); g.gbx1 = gbx1.mutable_data();
  g.gWx2 = gWx2.mutable_data(); g.gbx2 = gbx2.mutable_data(); g.gwx3 = gwx3.mutable_data();
  {
    py::gil_scoped_release release;
    alk::mp::edge_backward<T>(a, g, isa, precision);
  }
  return py::make_tuple(gB, gh, gx, gW1a, gw, gW2, gb2, gW3, gb3, gWx1, gbx1, gWx2, gbx2, gwx3);
}

template <typename T>
py::tuple double_backward_t(const py::array& A, const py::array& B, const py::array& w,
                            const py::array& x, const py::array& shift, const py::array& src,
                            const py::array& dst, const py::array& rowptr, const py::list& wl,
                            double eps, const py::array& gm, const py::array& gdx,
                            const py::array& h, const py::array& W1a, const py::array& src_perm,
                            const py::array& src_ptr, bool detach_norm, const py::array& dA,
                            const py::array& dB, const py::array& vh, const py::array& vx,
                            alk::Isa isa) {
  auto a = unpack<T>(A, B, w, x, shift, src, dst, rowptr, wl, eps);
  alk::mp::EdgeGrads<T> g{};
  unpack_backward(a, g, gm, gdx, h, W1a, src_perm, src_ptr, detach_norm);
  const py::ssize_t n = a.n, H = a.H, C = a.C, F = a.F;
  alk::mp::EdgeTangents<T> v{};
  v.dA = data_of<T>(dA, "dA", {n, H});
  v.dB = data_of<T>(dB, "dB", {n, H});
  v.vh = data_of<T>(vh, "v_h", {n, F});
  v.vx = data_of<T>(vx, "v_x", {n, 3});
  std::vector<py::array_t<T>> out;
  const std::vector<std::vector<py::ssize_t>> shapes = {
      {n, H}, {n, 3}, {n, H}, {n, H}, {n, F}, {n, 3}, {H, F}, {H}, {H, H}, {H},
      {H, H}, {H}, {C, H}, {C}, {C, C}, {C}, {C}};
  for (const auto& shape : shapes) out.push_back(empty<T>(shape));
  T* p[17];
  for (int k = 0; k < 17; ++k) p[k] = out[k].mutable_data();
  const alk::mp::DoubleGrads<T> o{p[0], p[1], p[2], p[3], p[4], p[5], p[6], p[7], p[8],
                                  p[9], p[10], p[11], p[12], p[13], p[14], p[15], p[16]};
  {
    py::gil_scoped_release release;
    alk::mp::edge_double_backward<T>(a, g, v, o, isa);
  }
  py::tuple result(17);
  for (int k = 0; k < 17; ++k) result[k] = out[k];
  return result;
}

bool is_dtype(const py::array& a, const py::dtype& d) { return a.dtype().is(d); }

}  // namespace

void bind_message_passing(py::module_& m) {
  m.def(
      "egnn_edge_forward",
      [](const py::array& A, const py::array& B, const py::array& w, const py::array& x,
         const py::array& shift, const py::array& src, const py::array& dst,
         const py::array& rowptr, const py::list& weights, double eps, const std::string& isa,
         const std::string& precision) {
        const alk::Isa k = alk::parse_isa(isa);
        const alk::mp::Precision p = parse_precision(precision);
        if (is_dtype(A, py::dtype::of<float>()))
          return forward_t<float>(A, B, w, x, shift, src, dst, rowptr, weights, eps, k, p);
        if (is_dtype(A, py::dtype::of<double>()))
          return forward_t<double>(A, B, w, x, shift, src, dst, rowptr, weights, eps, k, p);
        throw py::value_error("egnn_edge_forward supports float32 and float64 only");
      },
      "Fused EGNN edge forward. Returns (m [n, H], dx [n, 3]). isa: 'best' (the widest build this "
      "CPU runs), 'avx512' (widths multiples of 32), 'avx2' or 'baseline' (they agree to rounding), "
      "and with precision='bf16' also 'avx512bf16' (VDPBF16PS; the others then emulate it). "
      "precision: 'fp32' (the input dtype) or 'bf16' (float32 inputs: bfloat16 inputs to the "
      "per-edge tile GEMMs, float32 sums).", py::arg("A"), py::arg("B"),
      py::arg("w"), py::arg("x"), py::arg("shift"), py::arg("src"), py::arg("dst"),
      py::arg("rowptr"), py::arg("weights"), py::arg("eps"), py::arg("isa") = "best",
      py::arg("precision") = "fp32");
  m.def(
      "egnn_edge_backward",
      [](const py::array& A, const py::array& B, const py::array& w, const py::array& x,
         const py::array& shift, const py::array& src, const py::array& dst,
         const py::array& rowptr, const py::list& weights, double eps, const py::array& gm,
         const py::array& gdx, const py::array& h, const py::array& W1a,
         const py::array& src_perm, const py::array& src_ptr, bool detach_norm,
         const std::string& isa, const std::string& precision) {
        const alk::Isa k = alk::parse_isa(isa);
        const alk::mp::Precision p = parse_precision(precision);
        if (is_dtype(A, py::dtype::of<float>()))
          return backward_t<float>(A, B, w, x, shift, src, dst, rowptr, weights, eps, gm, gdx,
                                   h, W1a, src_perm, src_ptr, detach_norm, k, p);
        if (is_dtype(A, py::dtype::of<double>()))
          return backward_t<double>(A, B, w, x, shift, src, dst, rowptr, weights, eps, gm, gdx,
                                    h, W1a, src_perm, src_ptr, detach_norm, k, p);
        throw py::value_error("egnn_edge_backward supports float32 and float64 only");
      },
      "Fused EGNN edge backward (recomputes edge activations). Returns (gB, gh, gx, gW1a, gw, "
      "gW2, gb2, gW3, gb3, gWx1, gbx1, gWx2, gbx2, gwx3). isa and precision as for "
      "egnn_edge_forward.",
      py::arg("A"), py::arg("B"), py::arg("w"), py::arg("x"), py::arg("shift"), py::arg("src"),
      py::arg("dst"), py::arg("rowptr"), py::arg("weights"), py::arg("eps"), py::arg("grad_m"),
      py::arg("grad_dx"), py::arg("h"), py::arg("W1a"), py::arg("src_perm"), py::arg("src_ptr"),
      py::arg("detach_norm"), py::arg("isa") = "best", py::arg("precision") = "fp32");
  m.def("egnn_bf16_native", &alk::mp::native_bf16,
        "Whether precision='bf16' runs native VDPBF16PS code here (the avx512bf16 build was compiled "
        "and the CPU has AVX512_BF16) for widths that are multiples of 32; else it is emulated.");
  m.def(
      "egnn_edge_double_backward",
      [](const py::array& A, const py::array& B, const py::array& w, const py::array& x,
         const py::array& shift, const py::array& src, const py::array& dst,
         const py::array& rowptr, const py::list& weights, double eps, const py::array& gm,
         const py::array& gdx, const py::array& h, const py::array& W1a,
         const py::array& src_perm, const py::array& src_ptr, bool detach_norm,
         const py::array& dA, const py::array& dB, const py::array& vh, const py::array& vx,
         const std::string& isa) {
        const alk::Isa k = alk::parse_isa(isa);
        if (is_dtype(A, py::dtype::of<float>()))
          return double_backward_t<float>(A, B, w, x, shift, src, dst, rowptr, weights, eps, gm,
                                           gdx, h, W1a, src_perm, src_ptr, detach_norm, dA, dB,
                                           vh, vx, k);
        if (is_dtype(A, py::dtype::of<double>()))
          return double_backward_t<double>(A, B, w, x, shift, src, dst, rowptr, weights, eps, gm,
                                            gdx, h, W1a, src_perm, src_ptr, detach_norm, dA, dB,
                                            vh, vx, k);
        throw py::value_error("egnn_edge_double_backward supports float32 and float64 only");
      },
      "Fused EGNN edge double backward: the VJP of egnn_edge_backward for the cotangents "
      "(v_h, v_x) on its outputs gh and gx. dA, dB = v_h W1a^T, v_h W1b^T. Returns (dm, ddx, bp, "
      "bt, gh, gx, gW1a, gw, gW2, gb2, gW3, gb3, gWx1, gbx1, gWx2, gbx2, gwx3). isa as for "
      "egnn_edge_forward.",
      py::arg("A"), py::arg("B"), py::arg("w"), py::arg("x"), py::arg("shift"), py::arg("src"),
      py::arg("dst"), py::arg("rowptr"), py::arg("weights"), py::arg("eps"), py::arg("grad_m"),
      py::arg("grad_dx"), py::arg("h"), py::arg("W1a"), py::arg("src_perm"), py::arg("src_ptr"),
      py::arg("detach_norm"), py::arg("dA"), py::arg("dB"), py::arg("v_h"), py::arg("v_x"),
      py::arg("isa") = "best");
  m.def(
      "check_edge_index",
      [](const py::array& src, const py::array& dst, const py::array& rowptr, const py::array& src_perm,
         const py::array& src_ptr) {
        const py::ssize_t E = src.ndim() == 1 ? src.shape(0) : -1;
        const py::ssize_t n = rowptr.ndim() == 1 ? rowptr.shape(0) - 1 : -1;
        require(E >= 0 && n >= 0, "src and rowptr must be 1-D");
        const int64_t* s_ = index_of(src, "src", E);
        check_receivers(index_of(rowptr, "rowptr", n + 1), s_, index_of(dst, "dst", E), n, E);
        check_senders(index_of(src_ptr, "src_ptr", n + 1), index_of(src_perm, "src_perm", E), s_, n, E);
      },
      "The index checks every kernel call runs (O(n + E)): ValueError naming the first problem.",
      py::arg("src"), py::arg("dst"), py::arg("rowptr"), py::arg("src_perm"), py::arg("src_ptr"));
}
