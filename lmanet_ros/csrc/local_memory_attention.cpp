// Local memory attention of LMANet: a fused CPU kernel for float32 (inference only).
//
// Semantics (see lmanet_ros/models/attention.py): for a query key q (B, Ck, H, W) and T memory
// frames k_t (B, Ck, H, W), v_t (B, Cv, H, W), every pixel (y, x) takes the logits
// s[t, dy, dx] = sum_c q[c, y, x] * k_t[c, y + dy, x + dx] over its P x P window (P = 2r + 1),
// one softmax jointly over all T * P * P of them (out-of-map positions: logit exactly 0, value 0,
// and they count in the softmax), and out[c, y, x] = sum p[t, dy, dx] * v_t[c, y + dy, x + dx].
//
// Layout: the inputs are copied once into row-major buffers where the rows of all channels of
// one map row lie side by side, query (B, H, Ck, W8), keys (B, T, H, Ck, Wp), values
// (B, T, H, Cv, Wp), with W8 = W rounded up to a multiple of 8 and Wp = r + W8 + r columns.
// Tile: kLanes = 8 horizontally adjacent pixels of one row. Every vector register holds one
// float per pixel of the tile, so the softmax needs no horizontal reductions and the keys and
// values are read as contiguous (unaligned) 8-float slices of their rows:
//   1. logits: for each frame t and window row dy, the P logits of the 8 pixels are computed
//      in groups of up to 7 window columns dx (7 accumulators, the channel loop innermost);
//      they go into the tile's slot of a per-thread buffer (T * P * P * 8 floats, 56 KB for
//      T = 4, P = 21);
//   2. softmax: max over the slot (0 included when window rows fall outside the map), then
//      exp(s - max) in place (vectorised exp) and the sum, to which every out-of-map window row
//      adds its P zero logits as P * exp(-max) without computing them;
//   3. read-out: channel blocks of up to 12 output channels (12 accumulators); for each
//      window position the 8 probabilities are loaded once and multiplied into 12 value rows;
//      the sum's reciprocal is applied once at the store. Window rows and frames are summed in
//      two levels (per window row in registers, then across rows) for accuracy.
// Work unit: a group of up to kGroupTiles tiles of one row. Steps 1-2 run for every tile of the
// group, then step 3 channel block by channel block over all of them, so that the value rows of
// a block are fetched from memory once per group (with 2048 channels the values are far larger
// than the caches; per tile they would be fetched 16 times). The per-thread buffer holds one
// slot per tile of a group (0.9 MB for T = 4).
// Borders: window rows outside the map (dy) are skipped and counted; window columns outside
// the map read the zero padding columns, so their logit is exactly 0 and their value 0. Lanes
// beyond the map's width compute on zeros and are dropped at the store.
// Threads: groups are handed out one at a time from an atomic counter (dynamic scheduling, so
// that a core shared with another process does not hold up the whole call), inside one
// at::parallel_for over torch's own OpenMP thread pool: torch.set_num_threads applies and no
// second OpenMP runtime is loaded.
// Instruction sets: the kernel is compiled twice, for AVX2 + FMA (function target attribute)
// and for the baseline target, and the AVX2 one is picked at run time only where the CPU has
// both (x86-64); elsewhere (e.g. aarch64) only the baseline build exists. The vector code uses
// GCC/Clang vector extensions, so the same source vectorises for any target.

#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/util/Exception.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

namespace {

constexpr int kLanes = 8;            // pixels per tile, floats per vector
constexpr int kLogitGroup = 7;       // window columns per logit group (accumulators)
constexpr int kChannelBlock = 12;    // output channels per read-out block (accumulators)
constexpr int kGroupTiles = 16;      // tiles of a row read out together (see attend_group)

typedef float vec8 __attribute__((vector_size(32)));
typedef std::int32_t ivec8 __attribute__((vector_size(32)));

#define LMA_INLINE inline __attribute__((always_inline))

LMA_INLINE vec8 load8(const float* p) {
  vec8 v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

LMA_INLINE void store8(float* p, vec8 v) { std::memcpy(p, &v, sizeof v); }

LMA_INLINE vec8 splat(float x) { return vec8{x, x, x, x, x, x, x, x}; }

LMA_INLINE vec8 max8(vec8 a, vec8 b) { return a > b ? a : b; }

// exp(x) for x <= 0 (x = s - max in the softmax), relative error about 2e-7 (Cephes expf
// polynomial after x = n ln2 + f). x is clamped at -87 (exp(-87) ~ 1.6e-38, a normal float),
// which only matters for terms that are below 1 ulp of the sum, itself >= 1.
LMA_INLINE vec8 exp_nonpositive(vec8 x) {
  const vec8 lowest = splat(-87.0f);
  x = x < lowest ? lowest : x;
  // Adding 1.5 * 2^23 rounds x / ln2 to the nearest integer n, held in the low mantissa bits.
  const vec8 shifter = splat(12582912.0f);
  const vec8 t = x * 1.44269504088896341f + shifter;
  const vec8 n = t - shifter;
  vec8 f = x - n * 0.693359375f;
  f = f + n * 2.12194440e-4f;
  vec8 p = splat(1.9875691500e-4f);
  p = p * f + 1.3981999507e-3f;
  p = p * f + 8.3334519073e-3f;
  p = p * f + 4.1665795894e-2f;
  p = p * f + 1.6666665459e-1f;
  p = p * f + 5.0000001201e-1f;
  p = p * (f * f) + f + 1.0f;
  // 2^n: n + 127 in the exponent field (n >= -126 after the clamp).
  // (GCC vector casts between types of the same size reinterpret the bits.)
  const ivec8 bits = ((ivec8)t - (ivec8)shifter + 127) << 23;
  return p * (vec8)bits;
}

// Inputs rearranged for the kernel (row-major, float32, zero padded as described on top).
struct Problem {
  const float* query;    // (B, H, Ck, W8)
  const float* keys;     // (B, T, H, Ck, Wp), map columns [r, r + W)
  const float* values;   // (B, T, H, Cv, Wp), map columns [r, r + W)
  float* out;            // (B, Cv, H, W)
  std::int64_t batch, frames, key_channels, value_channels, height, width, width8, padded_width;
  int radius;
};

// Logits of one tile for window columns dx0 .. dx0 + G - 1 of one window row: G accumulators
// of 8 pixels, the channel loop innermost (one query load feeds G multiply-adds).
template <int G>
LMA_INLINE vec8 logit_group(const float* query, std::int64_t query_stride, const float* key,
                            std::int64_t key_stride, std::int64_t channels, float* dst,
                            vec8 running_max) {
  vec8 acc[G];
  for (int i = 0; i < G; ++i) acc[i] = splat(0.0f);
  for (std::int64_t c = 0; c < channels; ++c) {
    const vec8 q = load8(query + c * query_stride);
    const float* k = key + c * key_stride;
    for (int i = 0; i < G; ++i) acc[i] += q * load8(k + i);
  }
  for (int i = 0; i < G; ++i) {
    store8(dst + i * kLanes, acc[i]);
    running_max = max8(running_max, acc[i]);
  }
  return running_max;
}

// Read-out of NC output channels of one tile: sum over the window positions of
// probability (8 pixels) x value row slice (8 pixels), NC accumulators.
template <int NC>
LMA_INLINE void readout_block(const Problem& pb, const float* probs, std::int64_t b,
                              std::int64_t y, std::int64_t x0, std::int64_t c0, int row_lo,
                              int rows, vec8 inv_sum) {
  const int size = 2 * pb.radius + 1;
  // Two-level sums for accuracy: ``acc`` sums the P positions of one window row (registers),
  // ``total`` the rows (stack, touched once per row).
  vec8 acc[NC], total[NC];
  for (int i = 0; i < NC; ++i) total[i] = splat(0.0f);
  for (std::int64_t t = 0; t < pb.frames; ++t) {
    for (int j = 0; j < rows; ++j) {
      for (int i = 0; i < NC; ++i) acc[i] = splat(0.0f);
      // Value rows y + dy of channels c0 .. c0 + NC - 1; column x0 + dx of the padded copy is
      // map column x0 + dx - r, the window column dx of the tile's first pixel.
      const float* value = pb.values +
          (((b * pb.frames + t) * pb.height + y + row_lo + j) * pb.value_channels + c0) *
              pb.padded_width + x0;
      const float* p = probs + (t * rows + j) * size * kLanes;
      for (int dx = 0; dx < size; ++dx) {
        const vec8 weight = load8(p + dx * kLanes);
        for (int i = 0; i < NC; ++i) acc[i] += weight * load8(value + i * pb.padded_width + dx);
      }
      for (int i = 0; i < NC; ++i) total[i] += acc[i];
    }
  }
  const std::int64_t lanes = std::min<std::int64_t>(kLanes, pb.width - x0);
  for (int i = 0; i < NC; ++i) {
    float* dst = pb.out + ((b * pb.value_channels + c0 + i) * pb.height + y) * pb.width + x0;
    const vec8 result = total[i] * inv_sum;
    if (lanes == kLanes) {
      store8(dst, result);
    } else {
      float tmp[kLanes];
      store8(tmp, result);
      std::memcpy(dst, tmp, lanes * sizeof(float));
    }
  }
}

// Dispatch of a runtime channel count (1 .. kChannelBlock) to its template.
template <int NC = kChannelBlock>
LMA_INLINE void readout_tail(int count, const Problem& pb, const float* probs, std::int64_t b,
                             std::int64_t y, std::int64_t x0, std::int64_t c0, int row_lo,
                             int rows, vec8 inv_sum) {
  if constexpr (NC >= 1) {
    if (count == NC) {
      readout_block<NC>(pb, probs, b, y, x0, c0, row_lo, rows, inv_sum);
    } else {
      readout_tail<NC - 1>(count, pb, probs, b, y, x0, c0, row_lo, rows, inv_sum);
    }
  }
}

// Dispatch of a runtime group width (1 .. kLogitGroup) to its template.
template <int G = kLogitGroup>
LMA_INLINE vec8 logit_tail(int count, const float* query, std::int64_t query_stride,
                           const float* key, std::int64_t key_stride, std::int64_t channels,
                           float* dst, vec8 running_max) {
  if constexpr (G >= 1) {
    if (count == G) {
      return logit_group<G>(query, query_stride, key, key_stride, channels, dst, running_max);
    }
    return logit_tail<G - 1>(count, query, query_stride, key, key_stride, channels, dst,
                             running_max);
  } else {
    return running_max;
  }
}

// Logits and softmax of the tile of pixels (b, y, x0 .. x0 + 7) whose window rows inside the
// map are dy in [row_lo, row_lo + rows): exp(s - max) into ``probs`` (T * rows * P * 8 floats,
// layout [t][row][dx][lane]); returns 1 / (sum of the T * P * P terms) per pixel.
LMA_INLINE vec8 tile_softmax(const Problem& pb, std::int64_t b, std::int64_t y, std::int64_t x0,
                             int row_lo, int rows, float* probs) {
  const int size = 2 * pb.radius + 1;
  // 1. Logits.
  const std::int64_t query_stride = pb.width8;
  const std::int64_t key_stride = pb.padded_width;
  const float* query = pb.query + (b * pb.height + y) * pb.key_channels * pb.width8 + x0;
  vec8 running_max = splat(-INFINITY);
  for (std::int64_t t = 0; t < pb.frames; ++t) {
    for (int j = 0; j < rows; ++j) {
      const float* key = pb.keys +
          ((b * pb.frames + t) * pb.height + y + row_lo + j) * pb.key_channels *
              pb.padded_width + x0;
      float* dst = probs + (t * rows + j) * size * kLanes;
      int dx = 0;
      for (; dx + kLogitGroup <= size; dx += kLogitGroup) {
        running_max = logit_group<kLogitGroup>(query, query_stride, key + dx, key_stride,
                                               pb.key_channels, dst + dx * kLanes,
                                               running_max);
      }
      running_max = logit_tail(size - dx, query, query_stride, key + dx, key_stride,
                               pb.key_channels, dst + dx * kLanes, running_max);
    }
  }

  // 2. Softmax: exp(s - max) in place; out-of-map rows add P * exp(-max) each to the sum.
  const std::int64_t outside = pb.frames * (size - rows) * size;
  if (outside > 0) running_max = max8(running_max, splat(0.0f));
  const std::int64_t count = pb.frames * rows * size;  // logits computed
  vec8 sum = splat(0.0f);
  for (std::int64_t row = 0; row < count; row += size) {
    vec8 row_sum = splat(0.0f);  // two-level sum, as in the read-out
    for (std::int64_t i = row; i < row + size; ++i) {
      const vec8 e = exp_nonpositive(load8(probs + i * kLanes) - running_max);
      store8(probs + i * kLanes, e);
      row_sum += e;
    }
    sum += row_sum;
  }
  if (outside > 0) sum += static_cast<float>(outside) * exp_nonpositive(-running_max);
  return splat(1.0f) / sum;
}

// Tiles first_tile .. first_tile + count - 1 of row (b, y): the softmax of each into its slot of
// ``probs`` (count slots of T * P * P * 8 floats), then the read-out channel block by channel
// block, each block for all the tiles in turn: the value rows of a block are read from memory
// once for the whole group and then found in cache (with 2048 value channels the values of a
// frame are far larger than the caches).
LMA_INLINE void attend_group(const Problem& pb, std::int64_t b, std::int64_t y,
                             std::int64_t first_tile, int count, float* probs,
                             vec8* inv_sums) {
  const int r = pb.radius;
  const int size = 2 * r + 1;
  // Window rows inside the map, the same for all tiles of a row: dy in [row_lo, row_lo + rows).
  const int row_lo = static_cast<int>(std::max<std::int64_t>(-r, -y));
  const int row_hi = static_cast<int>(std::min<std::int64_t>(r, pb.height - 1 - y));
  const int rows = row_hi - row_lo + 1;
  const std::int64_t slot = pb.frames * size * size * kLanes;
  for (int k = 0; k < count; ++k) {
    inv_sums[k] = tile_softmax(pb, b, y, (first_tile + k) * kLanes, row_lo, rows,
                               probs + k * slot);
  }
  std::int64_t c0 = 0;
  for (; c0 + kChannelBlock <= pb.value_channels; c0 += kChannelBlock) {
    for (int k = 0; k < count; ++k) {
      readout_block<kChannelBlock>(pb, probs + k * slot, b, y, (first_tile + k) * kLanes, c0,
                                   row_lo, rows, inv_sums[k]);
    }
  }
  if (c0 < pb.value_channels) {
    for (int k = 0; k < count; ++k) {
      readout_tail(static_cast<int>(pb.value_channels - c0), pb, probs + k * slot, b, y,
                   (first_tile + k) * kLanes, c0, row_lo, rows, inv_sums[k]);
    }
  }
}

// Groups [begin, end) in the order (b, y, group of up to kGroupTiles tiles). Inlined into the
// two entry points below, which compile it for their targets.
LMA_INLINE void run_groups(const Problem& pb, std::int64_t begin, std::int64_t end, float* probs,
                           vec8* inv_sums) {
  const std::int64_t tiles_x = pb.width8 / kLanes;
  const std::int64_t groups_x = (tiles_x + kGroupTiles - 1) / kGroupTiles;
  for (std::int64_t i = begin; i < end; ++i) {
    const std::int64_t first = (i % groups_x) * kGroupTiles;
    attend_group(pb, i / (pb.height * groups_x), (i / groups_x) % pb.height, first,
                 static_cast<int>(std::min<std::int64_t>(kGroupTiles, tiles_x - first)), probs,
                 inv_sums);
  }
}

#if defined(__x86_64__)
__attribute__((target("avx2,fma"))) void groups_avx2(const Problem& pb, std::int64_t begin,
                                                      std::int64_t end, float* probs,
                                                      vec8* inv_sums) {
  run_groups(pb, begin, end, probs, inv_sums);
}
#endif

void groups_baseline(const Problem& pb, std::int64_t begin, std::int64_t end, float* probs,
                     vec8* inv_sums) {
  run_groups(pb, begin, end, probs, inv_sums);
}

using GroupsFn = void (*)(const Problem&, std::int64_t, std::int64_t, float*, vec8*);

GroupsFn select_groups_fn() {
#if defined(__x86_64__)
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return groups_avx2;
#endif
  return groups_baseline;
}

std::string kernel_isa() {
  return select_groups_fn() == groups_baseline ? "baseline" : "avx2+fma";
}

// Maps (B, C, H, W), ``lead`` of them -> (B, lead, H, C, left + width + right): the rows of all
// channels of one map row side by side, zero columns left and right of the map.
at::Tensor pad_rows(at::TensorList maps, std::int64_t left, std::int64_t right) {
  const auto& first = maps[0];
  const std::int64_t batch = first.size(0), channels = first.size(1);
  const std::int64_t height = first.size(2), width = first.size(3);
  at::Tensor out = at::empty({batch, static_cast<std::int64_t>(maps.size()), height, channels,
                              left + width + right}, first.options());
  if (left > 0) out.narrow(4, 0, left).zero_();
  if (right > 0) out.narrow(4, left + width, right).zero_();
  for (std::size_t t = 0; t < maps.size(); ++t) {
    out.select(1, static_cast<std::int64_t>(t)).narrow(3, left, width)
        .copy_(maps[t].permute({0, 2, 1, 3}));
  }
  return out;
}

void check_map(const at::Tensor& map, const char* what, std::int64_t index) {
  TORCH_CHECK(map.device().is_cpu() && map.scalar_type() == at::kFloat && map.dim() == 4,
              what, " ", index, " must be a 4-d float32 CPU tensor, got ", map.scalar_type(),
              " on ", map.device(), " with ", map.dim(), " dims");
}

at::Tensor local_memory_attention(const at::Tensor& query_key, at::TensorList memory_keys,
                                  at::TensorList memory_values, std::int64_t radius) {
  TORCH_CHECK(radius >= 0 && radius <= 1000, "radius must be in [0, 1000], got ", radius);
  TORCH_CHECK(!memory_keys.empty(), "local memory attention needs at least one memory frame");
  TORCH_CHECK(memory_keys.size() == memory_values.size(), memory_keys.size(),
              " memory keys but ", memory_values.size(), " values");
  check_map(query_key, "query key", 0);
  const std::int64_t batch = query_key.size(0), key_channels = query_key.size(1);
  const std::int64_t height = query_key.size(2), width = query_key.size(3);
  const std::int64_t value_channels = memory_values[0].size(1);
  for (std::size_t t = 0; t < memory_keys.size(); ++t) {
    check_map(memory_keys[t], "memory key", static_cast<std::int64_t>(t));
    check_map(memory_values[t], "memory value", static_cast<std::int64_t>(t));
    TORCH_CHECK(memory_keys[t].sizes() == query_key.sizes(), "memory key ", t,
                " has shape ", memory_keys[t].sizes(), ", expected ", query_key.sizes());
    const auto v = memory_values[t].sizes();
    TORCH_CHECK(v[0] == batch && v[1] == value_channels && v[2] == height && v[3] == width,
                "memory value ", t, " has shape ", v, ", expected (", batch, ", ",
                value_channels, ", ", height, ", ", width, ")");
  }
  at::Tensor out = at::empty({batch, value_channels, height, width}, query_key.options());
  if (out.numel() == 0) return out;

  const std::int64_t width8 = (width + kLanes - 1) / kLanes * kLanes;
  const at::Tensor query = pad_rows({query_key}, 0, width8 - width);
  const at::Tensor keys = pad_rows(memory_keys, radius, width8 + radius - width);
  const at::Tensor values = pad_rows(memory_values, radius, width8 + radius - width);

  const Problem pb{query.data_ptr<float>(), keys.data_ptr<float>(), values.data_ptr<float>(),
                   out.data_ptr<float>(), batch, static_cast<std::int64_t>(memory_keys.size()),
                   key_channels, value_channels, height, width, width8,
                   width8 + 2 * radius, static_cast<int>(radius)};
  const GroupsFn groups_fn = select_groups_fn();
  const std::int64_t size = 2 * radius + 1;
  const std::int64_t slot_vectors = pb.frames * size * size;  // vec8 per tile
  const std::int64_t tiles_x = width8 / kLanes;
  const std::int64_t total = batch * height * ((tiles_x + kGroupTiles - 1) / kGroupTiles);
  std::atomic<std::int64_t> next{0};
  // One task per thread; each takes groups from ``next`` until none are left.
  at::parallel_for(0, at::get_num_threads(), 1, [&](std::int64_t, std::int64_t) {
    std::unique_ptr<vec8[]> buffer(new vec8[kGroupTiles * slot_vectors]);
    vec8 inv_sums[kGroupTiles];
    for (;;) {
      const std::int64_t group = next.fetch_add(1);
      if (group >= total) break;
      groups_fn(pb, group, group + 1, reinterpret_cast<float*>(buffer.get()), inv_sums);
    }
  });
  return out;
}

}  // namespace

TORCH_LIBRARY(lmanet_ros, m) {
  m.def("local_memory_attention(Tensor query_key, Tensor[] memory_keys, "
        "Tensor[] memory_values, int radius) -> Tensor");
  m.def("kernel_isa() -> str", &kernel_isa);
}

TORCH_LIBRARY_IMPL(lmanet_ros, CPU, m) {
  m.impl("local_memory_attention", &local_memory_attention);
}
