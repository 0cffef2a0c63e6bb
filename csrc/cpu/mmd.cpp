// CPU passes of the multi-kernel MMD and its CPU registration.
//
// Quadratic estimators: the upper triangle of the pooled pair matrix is cut into blocks of
// kTile x kTile rows (x blocks, then y blocks) and the blocks are shared out through one atomic
// counter by workers started once with at::parallel_for (torch's own pool and thread count): a
// worker that is descheduled by another process simply takes fewer blocks, and there is no
// barrier between blocks. Per block a worker centres the rows, computes the dot products with one
// single-threaded GEMM, runs the tile pass (simd.h), and applies the gradient coefficients with
// one GEMM per side that needs a gradient (one in all on a diagonal block, whose C is symmetric);
// the resulting rows are added to the gradients under a per-block lock. Kernel sums are kept per
// block and added in block order, so the value does not depend on the scheduling; the gradients
// may differ in the last bits between runs with more than one thread (the order of the additions).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>
#include <mutex>
#include <vector>

#include "simd.h"
#include "sim2real_fast/mmd.h"
#include "sim2real_fast/mmd_math.h"

namespace sim2real_fast::mmd {
namespace {

// 512 x 512 blocks: the dot-product block (1 MiB in float32) stays in L2 for the tile pass, and
// n = m = 4096 gives 136 blocks to share out.
constexpr int64_t kTile = 512;
// Quadruples per chunk of the linear estimator.
constexpr int64_t kLinearChunk = 256;

template <typename T>
struct Block {
  const T* src;  // rows of x or y
  T* grad;       // matching rows of gx or gy, or nullptr when that gradient is not computed
  int64_t rows;
  int domain;    // 0: x, 1: y
};

struct Item {
  int32_t i, j;  // block indices, i <= j
  int slot;
  bool grad_i, grad_j;
};

template <typename T>
at::Tensor wrap(T* data, int64_t rows, int64_t cols) {
  return at::from_blob(data, {rows, cols}, at::TensorOptions().dtype(c10::CppTypeToScalarType<T>::value));
}

// out (rows, d) <- src - mean; norms (rows,) <- squared row norms, summed in float64.
template <typename T>
void centre(const T* src, const T* mean, int64_t rows, int64_t d, T* out, T* norms) {
  for (int64_t r = 0; r < rows; ++r) {
    double s = 0.0;
#pragma omp simd reduction(+ : s)
    for (int64_t f = 0; f < d; ++f) {
      const T v = src[r * d + f] - mean[f];
      out[r * d + f] = v;
      s += static_cast<double>(v) * v;
    }
    norms[r] = static_cast<T>(s);
  }
}

// grad (rows, d) += sums * rows_centred - product, under the block's lock.
template <typename T>
void add_gradient(std::mutex& lock, T* grad, const T* sums, const T* centred, const T* product, int64_t rows,
                  int64_t d) {
  const std::lock_guard<std::mutex> guard(lock);
  for (int64_t r = 0; r < rows; ++r) {
#pragma omp simd
    for (int64_t f = 0; f < d; ++f) grad[r * d + f] += sums[r] * centred[r * d + f] - product[r * d + f];
  }
}

template <typename T>
void quadratic_impl(Pass& p) {
  const int64_t d = p.x.size(1);
  std::vector<Block<T>> blocks;
  for (int domain = 0; domain < 2; ++domain) {
    const at::Tensor& src = domain == 0 ? p.x : p.y;
    const at::Tensor& grad = domain == 0 ? p.gx : p.gy;
    for (int64_t start = 0; start < src.size(0); start += kTile) {
      blocks.push_back({src.const_data_ptr<T>() + start * d,
                        grad.defined() ? grad.mutable_data_ptr<T>() + start * d : nullptr,
                        std::min(kTile, src.size(0) - start), domain});
    }
  }
  std::vector<Item> items;
  for (int32_t i = 0; i < static_cast<int32_t>(blocks.size()); ++i) {
    for (int32_t j = i; j < static_cast<int32_t>(blocks.size()); ++j) {
      const Block<T>&a = blocks[i], &b = blocks[j];
      const int slot = a.domain != b.domain ? kXY : a.domain == 0 ? kXX : kYY;
      const bool grad_i = p.mode.grad && a.grad != nullptr, grad_j = p.mode.grad && b.grad != nullptr;
      if (p.mode.sum || grad_i || grad_j) items.push_back({i, j, slot, grad_i, grad_j});
    }
  }
  const int64_t n_items = static_cast<int64_t>(items.size());
  if (n_items == 0) return;
  std::vector<double> item_sums(items.size(), 0.0);
  std::vector<std::mutex> locks(blocks.size());
  std::atomic<int64_t> next{0};
  const T* mean = p.mean.const_data_ptr<T>();
  const T* c = p.c.const_data_ptr<T>();
  const T* w = p.w.const_data_ptr<T>();
  const int k = static_cast<int>(p.c.size(0));

  const auto tile = cpu::simd().mmd_tile;
  auto worker = [&] {
    std::vector<T> a(kTile * d), b(kTile * d), product(kTile * d), dot(kTile * kTile);
    std::vector<T> na(kTile), nb(kTile), row_sums(kTile), col_sums(kTile);
    int32_t centred_i = -1;
    for (int64_t item; (item = next.fetch_add(1, std::memory_order_relaxed)) < n_items;) {
      const Item& it = items[item];
      const Block<T>&bi = blocks[it.i], &bj = blocks[it.j];
      if (it.i != centred_i) {
        centre(bi.src, mean, bi.rows, d, a.data(), na.data());
        centred_i = it.i;
      }
      const bool diagonal = it.i == it.j;
      const T* rows_j = a.data();
      const T* norms_j = na.data();
      if (!diagonal) {
        centre(bj.src, mean, bj.rows, d, b.data(), nb.data());
        rows_j = b.data();
        norms_j = nb.data();
      }
      const at::Tensor A = wrap(a.data(), bi.rows, d), B = wrap(const_cast<T*>(rows_j), bj.rows, d);
      at::Tensor D = wrap(dot.data(), bi.rows, bj.rows);
      at::mm_out(D, A, B.t());
      const bool grad = it.grad_i || it.grad_j;
      cpu::MmdTileArgs args{dot.data(), na.data(), norms_j, bi.rows, bj.rows, diagonal, c, w, k, p.doubling, p.scale[it.slot],
                         p.mode.sum, grad, row_sums.data(), col_sums.data(), p.x.scalar_type()};
      item_sums[item] = tile(args);
      if (!grad) continue;
      if (diagonal) {  // g_i += rowsum(S) a_i - (S A)_i with S = C + C^T
        at::Tensor P = wrap(product.data(), bi.rows, d);
        at::mm_out(P, D, A);
        add_gradient(locks[it.i], bi.grad, row_sums.data(), a.data(), product.data(), bi.rows, d);
        continue;
      }
      if (it.grad_i) {  // g_i += rowsum(C) a_i - (C B)_i
        at::Tensor P = wrap(product.data(), bi.rows, d);
        at::mm_out(P, D, B);
        add_gradient(locks[it.i], bi.grad, row_sums.data(), a.data(), product.data(), bi.rows, d);
      }
      if (it.grad_j) {  // g_j += colsum(C) b_j - (C^T A)_j
        at::Tensor P = wrap(product.data(), bj.rows, d);
        at::mm_out(P, D.t(), A);
        add_gradient(locks[it.j], bj.grad, col_sums.data(), rows_j, product.data(), bj.rows, d);
      }
    }
  };
  const int64_t workers = std::min<int64_t>(at::get_num_threads(), n_items);
  at::parallel_for(0, workers, 1, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) worker();
  });
  if (p.mode.sum) {
    double sums[3] = {0.0, 0.0, 0.0};
    for (int64_t item = 0; item < n_items; ++item) sums[items[item].slot] += item_sums[item];
    double* acc = p.acc.mutable_data_ptr<double>();
    for (int s = 0; s < 3; ++s) acc[s] += sums[s];
  }
}

void quadratic(Pass& pass) {
  AT_DISPATCH_FLOATING_TYPES(pass.x.scalar_type(), "mmd_quadratic_cpu", [&] { quadratic_impl<scalar_t>(pass); });
}

template <typename T>
T pair_distance(const T* a, const T* b, int64_t d) {
  T s = 0;
  for (int64_t f = 0; f < d; ++f) {
    const T diff = a[f] - b[f];
    s += diff * diff;
  }
  return s;
}

// Quadruples l in [begin, end): a = x_2l, b = x_2l+1, p = y_2l, q = y_2l+1 (see mmd_math.h).
template <typename T, bool kSum, bool kGrad>
double linear_chunk(const T* x, const T* y, const T* c, const T* w, int k, bool doubling, int64_t begin,
                    int64_t end, int64_t d, T scale, T* gx, T* gy) {
  double total = 0.0;
  for (int64_t l = begin; l < end; ++l) {
    const T *a = x + 2 * l * d, *b = a + d, *p = y + 2 * l * d, *q = p + d;
    const auto t = math::linear_terms<kSum, kGrad>(pair_distance(a, b, d), pair_distance(p, q, d),
                                                   pair_distance(a, q, d), pair_distance(b, p, d), c, w, k, doubling,
                                                   scale);
    if constexpr (kSum) total += t.h;
    if constexpr (kGrad) {
      if (gx != nullptr) {
        T *ga = gx + 2 * l * d, *gb = ga + d;
        for (int64_t f = 0; f < d; ++f) {
          ga[f] = t.s_ab * (a[f] - b[f]) - t.s_aq * (a[f] - q[f]);
          gb[f] = t.s_ab * (b[f] - a[f]) - t.s_bp * (b[f] - p[f]);
        }
      }
      if (gy != nullptr) {
        T *gp = gy + 2 * l * d, *gq = gp + d;
        for (int64_t f = 0; f < d; ++f) {
          gp[f] = t.s_pq * (p[f] - q[f]) - t.s_bp * (p[f] - b[f]);
          gq[f] = t.s_pq * (q[f] - p[f]) - t.s_aq * (q[f] - a[f]);
        }
      }
    }
  }
  return total;
}

// Fixed chunks of quadruples, each with its own partial sum, added in order: the value does not
// depend on the thread count.
void linear(Pass& pass, int64_t pairs) {
  const int64_t chunks = (pairs + kLinearChunk - 1) / kLinearChunk;
  std::vector<double> partial(chunks, 0.0);
  const bool grad = pass.grad_x || pass.grad_y;
  const Mode mode{pass.mode.sum, grad};
  if (!mode.sum && !mode.grad) return;
  AT_DISPATCH_FLOATING_TYPES(pass.x.scalar_type(), "mmd_linear_cpu", [&] {
    using T = scalar_t;
    const T *x = pass.x.const_data_ptr<T>(), *y = pass.y.const_data_ptr<T>();
    const T *c = pass.c.const_data_ptr<T>(), *w = pass.w.const_data_ptr<T>();
    T* gx = pass.grad_x ? pass.gx.mutable_data_ptr<T>() : nullptr;
    T* gy = pass.grad_y ? pass.gy.mutable_data_ptr<T>() : nullptr;
    const int k = static_cast<int>(pass.c.size(0));
    const int64_t d = pass.x.size(1);
    const T scale = static_cast<T>(pass.scale[0]);
    at::parallel_for(0, chunks, 1, [&](int64_t first, int64_t last) {
      for (int64_t chunk = first; chunk < last; ++chunk) {
        const int64_t begin = chunk * kLinearChunk, end = std::min(pairs, begin + kLinearChunk);
        partial[chunk] = with_mode(mode, [&]<bool kSum, bool kGrad>() {
          return linear_chunk<T, kSum, kGrad>(x, y, c, w, k, pass.doubling, begin, end, d, scale, gx, gy);
        });
      }
    });
  });
  if (mode.sum) {
    double total = 0.0;
    for (const double v : partial) total += v;
    pass.acc.mutable_data_ptr<double>()[0] += total;
  }
}

constexpr Backend kCpuBackend{quadratic, linear};

}  // namespace

TORCH_LIBRARY_IMPL(sim2real_fast, CPU, m) {
  using Ops = BoundOps<kCpuBackend>;
  m.impl("mmd", &Ops::value);
  m.impl("_mmd_with_grad", &Ops::value_and_grad);
  m.impl("_mmd_backward", &Ops::grad);
}

}  // namespace sim2real_fast::mmd
