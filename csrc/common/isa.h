// Instruction sets of the CPU kernels, and the one way a kernel family picks its build.
//
// Convention (every family in csrc/ follows it): the kernel body is an `<family>_impl.inc`
// compiled once per instruction set in its own translation unit, `<family>_<isa>.cpp`, inside
// `namespace alk::<family>::<isa>` and under `#pragma GCC target(...)`; that unit defines
// ALK_BUILD_<ISA> before including common/simd.h, so the SIMD helpers compile for the same
// target with internal linkage. The family's dispatcher (`<family>.cpp`, baseline target) calls
// select_isa and then the chosen build's entry point. No -march flags: the extension stays
// portable and still runs the widest build the CPU has.
#pragma once

#include <initializer_list>
#include <string>

namespace alk {

// Python's isa= names: "best", "avx512", "avx2", "baseline", and "avx512bf16" (AVX-512F/BW/VL
// plus AVX512_BF16's VDPBF16PS dot products; only the bf16 precision of the EGNN edge kernels
// has such a build, compiled where the compiler takes -mavx512bf16).
enum class Isa { kBest, kAvx512, kAvx2, kBaseline, kAvx512Bf16 };

// Throws std::invalid_argument (ValueError in Python) for an unknown name.
Isa parse_isa(const std::string& name);
const char* isa_name(Isa isa);

// Whether this CPU can run code built for `isa` (kBaseline and kBest: always). Whether a family
// has a build for it at all is the family's business (select_isa's `builds`).
bool cpu_supports(Isa isa);

// The build a family runs. `builds` lists the builds that can serve this call, widest first
// (a family leaves out a build that does not fit the call, e.g. AVX-512 for widths it does not
// tile). kBest gives the first one the CPU supports; any other request must be in `builds` and
// supported by the CPU, else std::invalid_argument names the family and the reason.
Isa select_isa(Isa requested, std::initializer_list<Isa> builds, const char* family);

}  // namespace alk
