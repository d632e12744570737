// The Gramian G = J Jᵀ of float32 task gradients, on every core of the CPU.
//
// One XLA FFI call takes every float32 leaf of the task gradients, each a
// row-major [T, n] matrix (task t's gradient in row t), and returns the
// [T, T] float32 sum of their Gramians. XLA runs a [32, n] x [n, 32] product
// on one thread; this kernel splits the columns over threads, computes only
// the upper triangle (tiles of 4 x 4 task pairs) and mirrors it.
//
// Precision: within a block of columns each of a vector's 16 lanes sums its
// products in float32; lanes and blocks are summed in float64, so the error
// does not grow with n as a float32 running sum's does.
//
// Built by setup.py as an optional extension; mtl_optax/_src/native.py loads
// it with ctypes and registers it with XLA. Without it the library computes
// the same Gramian with XLA (mtl_optax/_src/gramian.py).

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <exception>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include "xla/ffi/api/ffi.h"

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && \
    defined(__linux__)
// One copy of each kernel per instruction set; the loader picks the best the
// CPU has (AVX-512, AVX2 + FMA, or the x86-64 baseline).
#define MTL_OPTAX_CLONES \
  __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define MTL_OPTAX_CLONES
#endif

namespace {

namespace ffi = xla::ffi;

constexpr int kLanes = 16;  // Floats per vector: one AVX-512 register.
constexpr int kTile = 4;    // Task rows per tile side: 16 accumulators.
// Columns per block: T x block floats stay in a 1 MiB L2 cache.
constexpr int64_t kBlockBytes = int64_t{1} << 20;
constexpr int64_t kMinBlock = 1024;
constexpr int64_t kMaxBlock = 16384;

typedef float Vec __attribute__((vector_size(kLanes * sizeof(float))));

inline Vec Load(const float* p) {
  Vec v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

inline double SumLanes(Vec v) {
  double total = 0.0;
  for (int lane = 0; lane < kLanes; ++lane) total += v[lane];
  return total;
}

// acc[i][j] += Σ_k a[i][k] · b[j][k] over `length` columns, a multiple of
// kLanes.
MTL_OPTAX_CLONES
void TileProduct(const float* const* a, const float* const* b, int64_t length,
                 double acc[kTile][kTile]) {
  Vec s[kTile][kTile] = {};
  for (int64_t k = 0; k < length; k += kLanes) {
    Vec x[kTile], y[kTile];
    for (int i = 0; i < kTile; ++i) x[i] = Load(a[i] + k);
    for (int j = 0; j < kTile; ++j) y[j] = Load(b[j] + k);
    for (int i = 0; i < kTile; ++i)
      for (int j = 0; j < kTile; ++j) s[i][j] += x[i] * y[j];
  }
  for (int i = 0; i < kTile; ++i)
    for (int j = 0; j < kTile; ++j) acc[i][j] += SumLanes(s[i][j]);
}

// A run of columns [begin, end) of one leaf with `columns` columns per row.
struct Chunk {
  const float* leaf;
  int64_t columns;
  int64_t begin;
  int64_t end;
};

// Adds the upper triangle (r <= c) of the chunks' Gramian to out[T * T].
void AccumulateChunks(const Chunk* first, const Chunk* last, int64_t tasks,
                      const float* zeros, double* out) {
  const int64_t groups = (tasks + kTile - 1) / kTile;
  std::vector<const float*> rows(groups * kTile);
  for (const Chunk* chunk = first; chunk != last; ++chunk) {
    const int64_t length = (chunk->end - chunk->begin) / kLanes * kLanes;
    for (int64_t r = 0; r < groups * kTile; ++r) {
      // Rows past the last task read zeros; their products are dropped.
      rows[r] = r < tasks ? chunk->leaf + r * chunk->columns + chunk->begin
                          : zeros;
    }
    for (int64_t gi = 0; gi < groups; ++gi) {
      for (int64_t gj = gi; gj < groups; ++gj) {
        double acc[kTile][kTile] = {};
        TileProduct(&rows[gi * kTile], &rows[gj * kTile], length, acc);
        for (int i = 0; i < kTile; ++i) {
          for (int j = 0; j < kTile; ++j) {
            const int64_t r = gi * kTile + i, c = gj * kTile + j;
            if (r <= c && c < tasks) out[r * tasks + c] += acc[i][j];
          }
        }
      }
    }
    for (int64_t k = length; k < chunk->end - chunk->begin; ++k) {
      for (int64_t r = 0; r < tasks; ++r) {
        for (int64_t c = r; c < tasks; ++c) {
          out[r * tasks + c] +=
              static_cast<double>(rows[r][k]) * static_cast<double>(rows[c][k]);
        }
      }
    }
  }
}

using Matrix = ffi::Buffer<ffi::F32, 2>;

ffi::Error GramianOrThrow(int64_t threads, ffi::RemainingArgs leaves,
                          ffi::Result<Matrix> gram) {
  const int64_t tasks = gram->dimensions()[0];
  if (gram->dimensions()[1] != tasks) {
    return ffi::Error::InvalidArgument("mtl_gramian: the result must be square");
  }
  const int64_t block = std::clamp(
      kBlockBytes / (std::max<int64_t>(tasks, 1) * int64_t{sizeof(float)}) /
          kLanes * kLanes,
      kMinBlock, kMaxBlock);
  std::vector<Chunk> chunks;
  for (size_t index = 0; index < leaves.size(); ++index) {
    auto leaf = leaves.get<ffi::AnyBuffer>(index);
    if (!leaf.has_value()) return leaf.error();
    auto dims = leaf->dimensions();
    if (leaf->element_type() != ffi::DataType::F32 || dims.size() != 2 ||
        dims[0] != tasks) {
      return ffi::Error::InvalidArgument(
          "mtl_gramian: every leaf must be a float32 [T, n] matrix");
    }
    const float* data = static_cast<const float*>(leaf->untyped_data());
    for (int64_t begin = 0; begin < dims[1]; begin += block) {
      chunks.push_back({data, dims[1], begin, std::min(begin + block, dims[1])});
    }
  }

  const int64_t workers =
      std::clamp<int64_t>(threads, 1, std::max<int64_t>(chunks.size(), 1));
  const std::vector<float> zeros(block, 0.0f);
  std::vector<double> partial(workers * tasks * tasks, 0.0);
  auto work = [&](int64_t worker) {
    const int64_t count = static_cast<int64_t>(chunks.size());
    AccumulateChunks(chunks.data() + count * worker / workers,
                     chunks.data() + count * (worker + 1) / workers, tasks,
                     zeros.data(), partial.data() + worker * tasks * tasks);
  };
  std::vector<std::thread> pool;
  int64_t next = 1;
  for (; next < workers; ++next) {
    try {
      pool.emplace_back(work, next);
    } catch (const std::system_error&) {
      break;  // No more threads: this one does the rest.
    }
  }
  work(0);
  for (int64_t worker = next; worker < workers; ++worker) work(worker);
  for (std::thread& thread : pool) thread.join();

  float* out = gram->typed_data();
  for (int64_t r = 0; r < tasks; ++r) {
    for (int64_t c = r; c < tasks; ++c) {
      double total = 0.0;
      for (int64_t worker = 0; worker < workers; ++worker) {
        total += partial[(worker * tasks + r) * tasks + c];
      }
      out[r * tasks + c] = out[c * tasks + r] = static_cast<float>(total);
    }
  }
  return ffi::Error::Success();
}

// No C++ exception may cross into XLA: an allocation that fails is an error.
ffi::Error Gramian(int64_t threads, ffi::RemainingArgs leaves,
                   ffi::Result<Matrix> gram) {
  try {
    return GramianOrThrow(threads, leaves, gram);
  } catch (const std::exception& error) {
    return ffi::Error::Internal(std::string("mtl_gramian: ") + error.what());
  }
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(MtlOptaxGramian, Gramian,
                              ffi::Ffi::Bind()
                                  .Attr<int64_t>("threads")
                                  .RemainingArgs()
                                  .Ret<Matrix>());
