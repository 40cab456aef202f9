// Fused EGNN edge kernels (forward and backward) on CPU: plain C++17 + OpenMP, no Python.
//
// One call does a whole EGNN layer's edge work for edges j -> i sorted by receiver i:
//   d = x_j + s_e - x_i, r2 = |d|^2, u = d / (|d| + eps)
//   z1 = relu(A_j + B_i + w r2)  (the first edge Linear split into per-node products)
//   m_e = relu(W3 relu(W2 z1 + b2) + b3); gate = tanh(wx3 . relu(Wx2 relu(Wx1 m_e + bx1) + bx2))
//   m_i = sum_e m_e, dx_i = sum_e u gate.
// Work is split into one contiguous block of receivers per thread (equal edge counts), edges are
// processed in tiles of kTile rows, every output row is owned by exactly one thread (no atomics)
// and weight gradients go to per-thread buffers summed in a fixed order, so results are
// deterministic for a given thread count. Backward recomputes the edge activations tile by tile;
// no E x H tensor is ever stored. The tile GEMMs whose input is a ReLU output or a ReLU-masked
// gradient (all but the weight gradients) skip its zeros: about half the entries at
// initialisation and more as a model trains.
#pragma once

#include <cstdint>

#include "common/isa.h"

namespace alk::mp {

constexpr int64_t kTile = 32;  // edges per tile

// Inputs of the per-edge tile GEMMs (the edge and coordinate MLPs' Linears of the forward, their
// recomputation in the backward, the backward's input- and weight-gradient products, W1a's
// included). kFp32: the input dtype (float32 or float64). kBf16 (float32 inputs only): weights
// and activations rounded to bfloat16 (to nearest even, subnormals to zero, as VCVTNEPS2BF16
// does), products summed in float32; the node-level work, the geometry, the gate's dot product,
// bias and ReLU stay float32. The avx512bf16 build runs them as VDPBF16PS; every other build
// emulates it (the same roundings, float32 FMAs), so results agree to float32 rounding of the
// sums on every CPU. The double backward has no bf16 mode (it computes in the input dtype).
enum class Precision { kFp32, kBf16 };

// Weights and inputs shared by forward and backward. Row-major, weights as torch.nn.Linear
// stores them ([out, in]). Shapes: A, B [n, H]; w [H]; x [n, 3]; shift [E, 3]; W2, W3 [H, H];
// Wx1 [C, H]; Wx2 [C, C]; wx3 [C].
template <typename T>
struct EdgeArgs {
  int64_t n, E, F, H, C;
  const T *A, *B, *w, *x, *shift;
  const int64_t *src, *dst, *rowptr;
  const T *W2, *b2, *W3, *b3;
  const T *Wx1, *bx1, *Wx2, *bx2, *wx3;
  T eps;
};

// Backward-only inputs and outputs. gm [n, H], gdx [n, 3], h [n, F], W1a [H, F] (the sender
// block of the first edge Linear), src_perm / src_ptr: CSR over senders. Outputs (overwritten):
// gB [n, H] (receiver sums of d loss / d z1-preactivation), gh [n, F] (through A only),
// gx [n, 3], gW1a [H, F], gw [H], gW2, gb2, gW3, gb3, gWx1, gbx1, gWx2, gbx2, gwx3.
template <typename T>
struct EdgeGrads {
  const T *gm, *gdx, *h, *W1a;
  const int64_t *src_perm, *src_ptr;
  bool detach_norm;
  T *gB, *gh, *gx, *gW1a, *gw, *gW2, *gb2, *gW3, *gb3, *gWx1, *gbx1, *gWx2, *gbx2, *gwx3;
};

// Double backward (the VJP of the backward, for force training): the tangent of the inputs along
// which the forward is differentiated, v = (v_h, v_x). dA = v_h W1a^T and dB = v_h W1b^T [n, H]
// (the first layer's split, without bias), vh [n, F], vx [n, 3].
template <typename T>
struct EdgeTangents {
  const T *dA, *dB, *vh, *vx;
};

// Outputs of the double backward (overwritten): dm [n, H] and ddx [n, 3], the forward's tangent
// J v (the gradients w.r.t. the upstream gm and gdx); bp, bt [n, H], the receiver sums of the
// primal and the tangent adjoints of the first layer's pre-activation; gh [n, F] (the sender part
// of the gradient of h, through A); gx [n, 3]; and the weight gradients as in EdgeGrads.
template <typename T>
struct DoubleGrads {
  T *dm, *ddx, *bp, *bt, *gh, *gx, *gW1a, *gw, *gW2, *gb2, *gW3, *gb3, *gWx1, *gbx1, *gWx2, *gbx2, *gwx3;
};

inline int64_t weight_grad_size(int64_t F, int64_t H, int64_t C) {
  return H * F + H + 2 * (H * H + H) + C * H + C + C * C + C + C;
}

// One thread's scratch: the weight-gradient accumulators (backward passes, weight_grad_size
// elements) at its start, then tile buffers of kTile rows taken in order. The same object sizes
// the allocation and gives every buffer's offset, so the two cannot drift apart.
class ScratchLayout {
 public:
  explicit ScratchLayout(int64_t head) : size_(head) {}
  // Offset of the next tile buffer of `width` elements per row.
  int64_t tile(int64_t width) {
    const int64_t at = size_;
    size_ += kTile * width;
    return at;
  }
  int64_t size() const { return size_; }

 private:
  int64_t size_;
};

// The forward's tile buffers: activations Z1, Z2, M [H], P1, P2 [C]; per-edge gate, r^2, r; d, u [3].
struct ForwardScratch {
  int64_t Z1, Z2, M, P1, P2, gate, R2, R, D, U, size;
  ForwardScratch(int64_t H, int64_t C) {
    ScratchLayout s(0);
    Z1 = s.tile(H), Z2 = s.tile(H), M = s.tile(H), P1 = s.tile(C), P2 = s.tile(C);
    gate = s.tile(1), R2 = s.tile(1), R = s.tile(1), D = s.tile(3), U = s.tile(3);
    size = s.size();
  }
};

// The backward's: weight gradients, activations, their gradients (GM, GZ2 [H], GP2, GP1 [C]), the
// senders' features Hs and edge gradients GE [F], per-edge gate, gs, r^2, r; d, u, du [3].
struct BackwardScratch {
  int64_t Z1, Z2, M, GM, GZ2, P1, P2, GP2, GP1, Hs, GE, gate, gs, R2, R, D, U, GU, size;
  BackwardScratch(int64_t F, int64_t H, int64_t C) {
    ScratchLayout s(weight_grad_size(F, H, C));
    Z1 = s.tile(H), Z2 = s.tile(H), M = s.tile(H), GM = s.tile(H), GZ2 = s.tile(H);
    P1 = s.tile(C), P2 = s.tile(C), GP2 = s.tile(C), GP1 = s.tile(C), Hs = s.tile(F), GE = s.tile(F);
    gate = s.tile(1), gs = s.tile(1), R2 = s.tile(1), R = s.tile(1), D = s.tile(3), U = s.tile(3), GU = s.tile(3);
    size = s.size();
  }
};

// The double backward's: weight gradients; primal activations, their tangents (D*), the tangent
// adjoints (GM, GZ2, GP2, GP1) and the primal adjoints (Q*); Hs, the tangent rows Vs and GE [F];
// per-edge gate, gs, sbar, dg, dr2, r^2, r; d, u and their tangents dd, du [3].
struct DoubleBackwardScratch {
  int64_t Z1, Z2, M, DZ1, DZ2, DM, GM, GZ2, QM, QZ2, P1, P2, DP1, DP2, GP2, GP1, QP2, QP1;
  int64_t Hs, Vs, GE, gate, gs, sbar, dg, dr2, R2, R, D, U, DD, DU, size;
  DoubleBackwardScratch(int64_t F, int64_t H, int64_t C) {
    ScratchLayout s(weight_grad_size(F, H, C));
    Z1 = s.tile(H), Z2 = s.tile(H), M = s.tile(H), DZ1 = s.tile(H), DZ2 = s.tile(H), DM = s.tile(H);
    GM = s.tile(H), GZ2 = s.tile(H), QM = s.tile(H), QZ2 = s.tile(H);
    P1 = s.tile(C), P2 = s.tile(C), DP1 = s.tile(C), DP2 = s.tile(C);
    GP2 = s.tile(C), GP1 = s.tile(C), QP2 = s.tile(C), QP1 = s.tile(C);
    Hs = s.tile(F), Vs = s.tile(F), GE = s.tile(F);
    gate = s.tile(1), gs = s.tile(1), sbar = s.tile(1), dg = s.tile(1), dr2 = s.tile(1), R2 = s.tile(1);
    R = s.tile(1), D = s.tile(3), U = s.tile(3), DD = s.tile(3), DU = s.tile(3);
    size = s.size();
  }
};

// Elements of the scratch shared by all threads after the per-thread parts: the weights of the
// tile GEMMs repacked (both passes size it for the backward's nine).
inline int64_t packed_weights_size(int64_t F, int64_t H, int64_t C) {
  return 2 * (2 * H * H + H * C + C * C) + H * F;
}
// float elements of per-thread scratch that the bf16 tile GEMMs take after a thread's tile buffers
// (0 for kFp32): three [kTile, max(F, H, C)] buffers (emulation: the rounded GEMM inputs; the
// avx512bf16 build: bf16 values of the nonzero lists and row-pair-interleaved tiles).
inline int64_t bf16_scratch(int64_t F, int64_t H, int64_t C) {
  const int64_t K = F > H ? (F > C ? F : C) : (H > C ? H : C);
  return 3 * kTile * K;
}
// int32 elements of per-thread scratch for the nonzero lists of a tile's GEMM inputs: counts
// [kTile], then columns [kTile, max(H, C)].
inline int64_t list_scratch(int64_t H, int64_t C) { return kTile * (1 + (H > C ? H : C)); }

// Builds: avx512 (only for H, C and F multiples of 32), avx2, baseline; `isa` picks one as
// common/isa.h describes. They agree to rounding (the gate's dot product sums vector lanes of
// each width).

// Requirements (checked by the caller): H, C and F multiples of 16, dst sorted, indices valid.
// Outputs m [n, H] and dx [n, 3] are overwritten. Uses up to omp_get_max_threads() threads
// (one per 1024 edges). Precision::kBf16: float32 only (std::invalid_argument for double); the
// avx512bf16 build serves it where the CPU and the compiler have AVX512_BF16 and H, C, F are
// multiples of 32, an emulating build (avx512, avx2, baseline, chosen as for kFp32) elsewhere or
// when `isa` names one.
template <typename T>
void edge_forward(const EdgeArgs<T>& a, T* m, T* dx, Isa isa = Isa::kBest,
                  Precision precision = Precision::kFp32);

// Fills every output of g.
template <typename T>
void edge_backward(const EdgeArgs<T>& a, const EdgeGrads<T>& g, Isa isa = Isa::kBest,
                   Precision precision = Precision::kFp32);

// Whether kBest with Precision::kBf16 runs native VDPBF16PS code on this CPU for widths that are
// multiples of 32 (the avx512bf16 build was compiled and the CPU has AVX512_BF16).
bool native_bf16();

// The VJP of edge_backward for the cotangent v = (v_h, v_x) on its outputs gh and gx (zero
// cotangents on the weight gradients, the case of force training): reads g's inputs (gm, gdx, h,
// W1a, src_perm, src_ptr, detach_norm) and fills every output of o. Recomputes the edge
// activations and their tangents tile by tile (reverse over forward); no E x H tensor is stored.
template <typename T>
void edge_double_backward(const EdgeArgs<T>& a, const EdgeGrads<T>& g, const EdgeTangents<T>& v,
                          const DoubleGrads<T>& o, Isa isa = Isa::kBest);

// The same kernels compiled for one instruction set; edge_forward/edge_backward pick at run time.
// scratch: nthreads * {forward,backward}_scratch + packed_weights_size elements, 64-byte aligned;
// lists: nthreads * list_scratch; edge_buf: [E, F + 3]. The *_bf16 entry points (float only)
// take nthreads * ({forward,backward}_scratch + bf16_scratch) + packed_weights_size elements.
#define ALK_MP_DECLARE(NS)                                                                   \
  namespace NS {                                                                             \
  void forward(const EdgeArgs<float>&, float*, float*, float*, int32_t*, int);             \
  void forward(const EdgeArgs<double>&, double*, double*, double*, int32_t*, int);         \
  void backward(const EdgeArgs<float>&, const EdgeGrads<float>&, float*, float*, int32_t*, \
                int);                                                                       \
  void backward(const EdgeArgs<double>&, const EdgeGrads<double>&, double*, double*,       \
                int32_t*, int);                                                             \
  void double_backward(const EdgeArgs<float>&, const EdgeGrads<float>&,                    \
                       const EdgeTangents<float>&, const DoubleGrads<float>&, float*, float*, \
                       int32_t*, int);                                                      \
  void double_backward(const EdgeArgs<double>&, const EdgeGrads<double>&,                  \
                       const EdgeTangents<double>&, const DoubleGrads<double>&, double*,    \
                       double*, int32_t*, int);                                             \
  void forward_bf16(const EdgeArgs<float>&, float*, float*, float*, int32_t*, int);        \
  void backward_bf16(const EdgeArgs<float>&, const EdgeGrads<float>&, float*, float*,      \
                     int32_t*, int);                                                        \
  }
ALK_MP_DECLARE(avx512)
ALK_MP_DECLARE(avx2)
ALK_MP_DECLARE(baseline)
#undef ALK_MP_DECLARE

// The native bf16 build (mp_avx512bf16.cpp): H, C and F multiples of 32. compiled() is false where
// the compiler lacked AVX512_BF16 (the entry points then throw std::logic_error).
namespace avx512bf16 {
bool compiled();
void forward_bf16(const EdgeArgs<float>&, float*, float*, float*, int32_t*, int);
void backward_bf16(const EdgeArgs<float>&, const EdgeGrads<float>&, float*, float*, int32_t*, int);
}  // namespace avx512bf16

}  // namespace alk::mp
