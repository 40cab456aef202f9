#include "common/isa.h"

#include <stdexcept>

namespace alk {

Isa parse_isa(const std::string& name) {
  if (name == "best") return Isa::kBest;
  if (name == "avx512") return Isa::kAvx512;
  if (name == "avx2") return Isa::kAvx2;
  if (name == "baseline") return Isa::kBaseline;
  if (name == "avx512bf16") return Isa::kAvx512Bf16;
  throw std::invalid_argument("isa must be 'best', 'avx512', 'avx2', 'baseline' or 'avx512bf16', got '" + name + "'");
}

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::kAvx512: return "avx512";
    case Isa::kAvx2: return "avx2";
    case Isa::kBaseline: return "baseline";
    case Isa::kAvx512Bf16: return "avx512bf16";
    default: return "best";
  }
}

bool cpu_supports(Isa isa) {
#if defined(__x86_64__) || defined(__i386__)
  static const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  static const bool avx512 = avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl");
  static const bool avx512bf16 =
      avx512 && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512bf16");
  if (isa == Isa::kAvx512) return avx512;
  if (isa == Isa::kAvx512Bf16) return avx512bf16;
  if (isa == Isa::kAvx2) return avx2;
#else
  if (isa == Isa::kAvx512 || isa == Isa::kAvx2 || isa == Isa::kAvx512Bf16) return false;
#endif
  return true;
}

Isa select_isa(Isa requested, std::initializer_list<Isa> builds, const char* family) {
  if (requested == Isa::kBest) {
    for (Isa b : builds)
      if (cpu_supports(b)) return b;
    return Isa::kBaseline;
  }
  bool listed = false;
  std::string names;
  for (Isa b : builds) {
    listed = listed || b == requested;
    names += std::string(names.empty() ? "" : ", ") + isa_name(b);
  }
  if (!listed)
    throw std::invalid_argument(std::string("isa '") + isa_name(requested) + "' is not available for the " +
                                family + " kernels on this call (available: " + names + ")");
  if (!cpu_supports(requested))
    throw std::invalid_argument(std::string("isa '") + isa_name(requested) + "': this CPU lacks it");
  return requested;
}

}  // namespace alk
