// W4A16 GEMM on tensor cores with register-level dequantization (the Marlin idea, plain CUDA).
//
// y (M, N) = x (M, K) @ dequant(W)^T, W 4-bit, group-quantized along K (group = a multiple of 128).
// Operand layout (made once at load time by edgeserve_pod/kernels/w4a16_mma.py: repack_mma):
//   qw  int32 (N/32, Kp/32, 32 lanes, 4 words): per (32-column block, 32-k step pair) one
//       coalesced 512-byte warp load; lane l's 4 words hold exactly the mma.m16n8k16 B fragments
//       it needs for 2 k-steps x 4 n-tiles of 8 columns (column 8t + l/4, rows 2(l%4) + {0,1,8,9}),
//       so the codes never go through shared memory.
//   zc  (G, N) 32-bit: (MAGIC + zero) twice, in the activation dtype (bf16 128 + z or fp16 1024 + z: exact)
//   sc  (G, N) float32 scales
// Per word, 4 lop3 (+3 shifts) turn 8 codes into 4 bf16x2/f16x2 values MAGIC + q, one sub.x2 each
// gives q - z exactly; mma accumulates x . (q - z) of one 128-k block in fp32, and the block's
// partial is scaled in fp32 into the accumulator: the product is exact up to fp32 summation order,
// tighter than a bf16 dequantized weight.
// For the decode shapes, M <= 16 (one 16-row mma tile; rows >= M are zeros, and for M <= 8 the
// second row group is not even loaded: M = 1 wastes 15/16 of the mma, which is free here, the
// step being bound by the weight bytes). Larger M goes to the Triton kernel.
// A CTA owns 32 output columns; its WK warps split the K blocks and reduce through shared memory.
// Each warp streams its blocks through an S-stage cp.async pipeline in shared memory (codes,
// A fragments, zeros, scales), so S - 1 blocks of loads are in flight per warp without holding
// registers; each lane copies and reads back only its own words (no CTA barrier in the loop).
// Built by nvcc at run time into a shared library and called through ctypes (no torch headers).

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <stdint.h>

#include <type_traits>

namespace {

template <bool BF16>
struct Traits;
template <>
struct Traits<true> {
  static constexpr uint32_t MAGIC2 = 0x43004300u;  // bf16x2 (128, 128)
};
template <>
struct Traits<false> {
  static constexpr uint32_t MAGIC2 = 0x64006400u;  // f16x2 (1024, 1024)
};

// (w & 0x000F000F) | MAGIC2: nibbles 0 and 4 of w become MAGIC + q in the low / high 16 bits
template <uint32_t MAGIC2>
__device__ __forceinline__ uint32_t lop3_codes(uint32_t w) {
  uint32_t d;
  asm("lop3.b32 %0, %1, %2, %3, 0xEA;" : "=r"(d) : "r"(w), "n"(0x000F000F), "n"(MAGIC2));
  return d;
}

// a - b (MUL: a * b) on packed pairs of the activation dtype
template <bool BF16, bool MUL = false>
__device__ __forceinline__ uint32_t op2(uint32_t a, uint32_t b) {
  using T2 = std::conditional_t<BF16, __nv_bfloat162, __half2>;
  const T2 x = *reinterpret_cast<T2*>(&a), y = *reinterpret_cast<T2*>(&b);
  T2 r;
  if constexpr (MUL) {
    r = __hmul2(x, y);
  } else {
    r = __hsub2(x, y);
  }
  return *reinterpret_cast<uint32_t*>(&r);
}
template <bool BF16>
__device__ __forceinline__ uint32_t sub2(uint32_t a, uint32_t b) { return op2<BF16, false>(a, b); }
template <bool BF16>
__device__ __forceinline__ uint32_t mul2(uint32_t a, uint32_t b) { return op2<BF16, true>(a, b); }

// a 16-bit scale in both halves, in the activation dtype
template <bool BF16>
__device__ __forceinline__ uint32_t scale2(__half s) {
  uint16_t h;
  if constexpr (BF16) {
    h = __bfloat16_as_ushort(__float2bfloat16_rn(__half2float(s)));
  } else {
    h = __half_as_ushort(s);
  }
  return (uint32_t)h * 0x10001u;
}

template <bool BF16>
__device__ __forceinline__ void mma16816(float* c, const uint32_t* a, uint32_t b0, uint32_t b1) {
  if constexpr (BF16) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  } else {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  }
}

// cp.async: global -> shared without registers. Each lane copies exactly the bytes it will read
// back itself, so a warp needs only cp.async.wait_group (no barrier) before using a stage.
__device__ __forceinline__ uint32_t smem_addr(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}
__device__ __forceinline__ void cp16_stream(void* dst, const void* src) {  // weights: L2 only
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(smem_addr(dst)), "l"(src));
}
template <int BYTES>
__device__ __forceinline__ void cp_small(void* dst, const void* src, bool valid) {  // zero-filled if !valid
  asm volatile("cp.async.ca.shared.global [%0], [%1], %2, %3;" ::"r"(smem_addr(dst)), "l"(src), "n"(BYTES),
               "r"(valid ? BYTES : 0));
}
__device__ __forceinline__ void cp_commit() { asm volatile("cp.async.commit_group;"); }
template <int N>
__device__ __forceinline__ void cp_wait() { asm volatile("cp.async.wait_group %0;" ::"n"(N)); }

__device__ __forceinline__ void zero_tiles(float (&c)[4][4]) {  // 4 n-tiles of C fragments
#pragma unroll
  for (int t = 0; t < 4; ++t)
#pragma unroll
    for (int i = 0; i < 4; ++i) c[t][i] = 0.f;
}

// One 128-k block's operands for one warp, in shared memory, indexed [..][lane] (conflict-free:
// every lane reads back its own words). AW = A-fragment words per k-step: 2 for M <= 8 (rows r),
// 4 for M <= 16 (rows r and r + 8).
template <int AW>
struct Stage {
  int4 w[4][32];          // codes: 4 k-step pairs
  uint32_t a[8][AW][32];  // A fragments of the block's 8 k-steps
  uint32_t zz[4][32];     // (MAGIC + z) x2 of the lane's B column in tiles 0..3
  float2 ss[4][32];       // scales of the lane's two C columns in tiles 0..3
};

template <bool BF16, bool ROWS2, int WK, int S>
__global__ void __launch_bounds__(32 * WK) w4a16_mma_kernel(const uint16_t* __restrict__ x,
                                                             const int4* __restrict__ qw,
                                                             const float* __restrict__ sc,
                                                             const uint32_t* __restrict__ zc,
                                                             uint16_t* __restrict__ y, int M, int N, int K, int Kp,
                                                             int ldx, int ldy, int group_blocks) {
  constexpr uint32_t MAGIC2 = Traits<BF16>::MAGIC2;
  constexpr int ROWS = ROWS2 ? 16 : 8;
  constexpr int AW = ROWS2 ? 4 : 2;
  extern __shared__ __align__(16) unsigned char smem[];
  __shared__ float red[ROWS * 32];

  const int nb = blockIdx.x;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int r = lane >> 2, c = lane & 3;
  const int nblk = Kp >> 7;  // 128-k blocks
  const int b_begin = warp * nblk / WK, b_end = (warp + 1) * nblk / WK;
  Stage<AW>* ring = reinterpret_cast<Stage<AW>*>(smem) + warp * S;

  for (int i = threadIdx.x; i < ROWS * 32; i += 32 * WK) red[i] = 0.f;

  const bool ok0 = r < M, ok1 = ROWS2 && r + 8 < M;
  const uint32_t* x0 = reinterpret_cast<const uint32_t*>(x + (size_t)(ok0 ? r : 0) * ldx);
  const uint32_t* x1 = reinterpret_cast<const uint32_t*>(x + (size_t)(ok1 ? r + 8 : 0) * ldx);
  const int4* wp = qw + (size_t)nb * (Kp >> 5) * 32 + lane;
  const int col_b = nb * 32 + r;      // B-fragment column of tile t: col_b + 8 t
  const int col_c = nb * 32 + 2 * c;  // C-fragment columns of tile t: col_c + 8 t + {0, 1}

  // issue block b's copies into ring slot `slot` (one commit group per call, even when b is past
  // the end, so that wait_group counts stay aligned)
  auto issue = [&](int slot, int b) {
    if (b < b_end) {
      Stage<AW>& st = ring[slot];
#pragma unroll
      for (int i = 0; i < 4; ++i) cp16_stream(&st.w[i][lane], wp + (size_t)(b * 4 + i) * 32);
#pragma unroll
      for (int s = 0; s < 8; ++s) {
        const int ka = b * 128 + s * 16 + 2 * c, kb = ka + 8;  // pairs (ka, ka+1), (kb, kb+1)
        cp_small<4>(&st.a[s][0][lane], x0 + (ka >> 1), ok0 && ka < K);
        if constexpr (ROWS2) {
          cp_small<4>(&st.a[s][1][lane], x1 + (ka >> 1), ok1 && ka < K);
          cp_small<4>(&st.a[s][2][lane], x0 + (kb >> 1), ok0 && kb < K);
          cp_small<4>(&st.a[s][3][lane], x1 + (kb >> 1), ok1 && kb < K);
        } else {
          cp_small<4>(&st.a[s][1][lane], x0 + (kb >> 1), ok0 && kb < K);
        }
      }
      const int g = b / group_blocks;
#pragma unroll
      for (int t = 0; t < 4; ++t) {
        cp_small<4>(&st.zz[t][lane], zc + (size_t)g * N + col_b + 8 * t, true);
        cp_small<8>(&st.ss[t][lane], sc + (size_t)g * N + col_c + 8 * t, true);
      }
    }
    cp_commit();
  };

  float acc[4][4];
  zero_tiles(acc);

#pragma unroll
  for (int j = 0; j < S - 1; ++j) issue(j, b_begin + j);

  int slot = 0;
  for (int b = b_begin; b < b_end; ++b) {
    cp_wait<S - 2>();  // block b's group has landed (this lane's copies)
    __syncwarp();
    // refill the slot read in the previous iteration with block b + S - 1 before computing b
    issue(slot == 0 ? S - 1 : slot - 1, b + S - 1);
    const Stage<AW>& st = ring[slot];
    uint32_t zz[4];
    float2 ss[4];
#pragma unroll
    for (int t = 0; t < 4; ++t) {
      zz[t] = st.zz[t][lane];
      ss[t] = st.ss[t][lane];
    }
    float part[4][4];
    zero_tiles(part);
#pragma unroll
    for (int s = 0; s < 8; ++s) {  // k-steps of 16 in this block
      uint32_t a[4];
      if constexpr (ROWS2) {
        a[0] = st.a[s][0][lane]; a[1] = st.a[s][1][lane]; a[2] = st.a[s][2][lane]; a[3] = st.a[s][3][lane];
      } else {
        a[0] = st.a[s][0][lane]; a[1] = 0u; a[2] = st.a[s][1][lane]; a[3] = 0u;
      }
      const int4 w4 = st.w[s >> 1][lane];
      const uint32_t wlo = (s & 1) ? (uint32_t)w4.z : (uint32_t)w4.x;  // tiles 0, 1
      const uint32_t whi = (s & 1) ? (uint32_t)w4.w : (uint32_t)w4.y;  // tiles 2, 3
      uint32_t bf[4][2];
      bf[0][0] = sub2<BF16>(lop3_codes<MAGIC2>(wlo), zz[0]);
      bf[0][1] = sub2<BF16>(lop3_codes<MAGIC2>(wlo >> 4), zz[0]);
      bf[1][0] = sub2<BF16>(lop3_codes<MAGIC2>(wlo >> 8), zz[1]);
      bf[1][1] = sub2<BF16>(lop3_codes<MAGIC2>(wlo >> 12), zz[1]);
      bf[2][0] = sub2<BF16>(lop3_codes<MAGIC2>(whi), zz[2]);
      bf[2][1] = sub2<BF16>(lop3_codes<MAGIC2>(whi >> 4), zz[2]);
      bf[3][0] = sub2<BF16>(lop3_codes<MAGIC2>(whi >> 8), zz[3]);
      bf[3][1] = sub2<BF16>(lop3_codes<MAGIC2>(whi >> 12), zz[3]);
#pragma unroll
      for (int t = 0; t < 4; ++t) mma16816<BF16>(part[t], a, bf[t][0], bf[t][1]);
    }
#pragma unroll
    for (int t = 0; t < 4; ++t) {
      acc[t][0] += ss[t].x * part[t][0];
      acc[t][1] += ss[t].y * part[t][1];
      acc[t][2] += ss[t].x * part[t][2];
      acc[t][3] += ss[t].y * part[t][3];
    }
    slot = slot == S - 1 ? 0 : slot + 1;
  }
  cp_wait<0>();

  __syncthreads();  // red zeroed
  if (ok0 || ok1) {
#pragma unroll
    for (int t = 0; t < 4; ++t) {
      const int col = 8 * t + 2 * c;
      if (ok0) {
        atomicAdd(&red[r * 32 + col], acc[t][0]);
        atomicAdd(&red[r * 32 + col + 1], acc[t][1]);
      }
      if (ROWS2 && ok1) {
        atomicAdd(&red[(r + 8) * 32 + col], acc[t][2]);
        atomicAdd(&red[(r + 8) * 32 + col + 1], acc[t][3]);
      }
    }
  }
  __syncthreads();
  for (int i = threadIdx.x; i < ROWS * 32; i += 32 * WK) {
    const int row = i >> 5, col = nb * 32 + (i & 31);
    if (row < M) {
      const float v = red[i];
      y[(size_t)row * ldy + col] =
          BF16 ? __bfloat16_as_ushort(__float2bfloat16_rn(v)) : __half_as_ushort(__float2half_rn(v));
    }
  }
}

#define ES_ARGS x, qw, sc, zc, y, M, N, K, Kp, ldx, ldy, gb
template <bool BF16, bool ROWS2, int WK, int S>
cudaError_t launch_one(dim3 grid, cudaStream_t st, const uint16_t* x, const int4* qw, const float* sc,
                       const uint32_t* zc, uint16_t* y, int M, int N, int K, int Kp, int ldx, int ldy, int gb) {
  constexpr int bytes = WK * S * (int)sizeof(Stage<ROWS2 ? 4 : 2>);
  static bool configured = false;  // the opt-in above 48 KiB, once per instantiation
  if (!configured) {
    cudaError_t e = cudaFuncSetAttribute(w4a16_mma_kernel<BF16, ROWS2, WK, S>,
                                         cudaFuncAttributeMaxDynamicSharedMemorySize, bytes);
    if (e != cudaSuccess) return e;
    configured = true;
  }
  w4a16_mma_kernel<BF16, ROWS2, WK, S><<<grid, 32 * WK, bytes, st>>>(ES_ARGS);
  return cudaGetLastError();
}

template <bool BF16, bool ROWS2, int S>
cudaError_t launch_wk(int wk, dim3 grid, cudaStream_t st, const uint16_t* x, const int4* qw, const float* sc,
                      const uint32_t* zc, uint16_t* y, int M, int N, int K, int Kp, int ldx, int ldy, int gb) {
  switch (wk) {
    case 2: return launch_one<BF16, ROWS2, 2, S>(grid, st, ES_ARGS);
    case 4: return launch_one<BF16, ROWS2, 4, S>(grid, st, ES_ARGS);
    case 8: return launch_one<BF16, ROWS2, 8, S>(grid, st, ES_ARGS);
    default: return cudaErrorInvalidValue;
  }
}

template <bool BF16>
cudaError_t launch(int depth, int wk, cudaStream_t st, const uint16_t* x, const int4* qw, const float* sc,
                   const uint32_t* zc, uint16_t* y, int M, int N, int K, int Kp, int ldx, int ldy, int gb) {
  dim3 grid(N / 32, 1);
  if (M > 16) return cudaErrorInvalidValue;
  const bool rows2 = M > 8;
  if (depth == 3) return rows2 ? launch_wk<BF16, true, 3>(wk, grid, st, ES_ARGS) : launch_wk<BF16, false, 3>(wk, grid, st, ES_ARGS);
  if (depth == 4) return rows2 ? launch_wk<BF16, true, 4>(wk, grid, st, ES_ARGS) : launch_wk<BF16, false, 4>(wk, grid, st, ES_ARGS);
  if (depth == 6) return rows2 ? launch_wk<BF16, true, 6>(wk, grid, st, ES_ARGS) : launch_wk<BF16, false, 6>(wk, grid, st, ES_ARGS);
  return cudaErrorInvalidValue;
}
#undef ES_ARGS

// ---------------------------------------------------------------------------------------------
// Swapped operands on the Triton layout, for decode and small batches (M <= 64): y^T = W . x^T, the
// weights are the mma's A operand (16 output columns x 16 k per m16n8k16; no mma row is wasted on
// them) and x its B operand (8 rows of x per n-tile; MT = ceil(M / 8) tiles, 1, 2, 4 or 8: every
// dequantized A fragment feeds MT mmas).
// - Weights: the Triton kernel's qweight (Kp/8, N) int32 as it is (word row 16 b + r holds
//   k = 128 b + 16 j + r at nibble j), scales (G, N) fp16, zeros (G, N) uint8: no second copy.
//   A block's 16 rows x 16 columns of words (1 KiB) come into a per-warp shared-memory ring
//   (D stages) by 16-byte cp.async, rows padded to TL_ROW words so the reads below hit 32 banks;
//   a lane reads the 8 words of rows 2c, 2c+1, 2c+8, 2c+9 in columns g, g + 8, one byte_perm per
//   word pair puts the pair's nibble j side by side in 16-bit halves, and lop3 of (pair >> 4 j)
//   (+ one sub.x2 of MAGIC + z) makes the exact (q - z) A register of k-step j. Each 128-k block's
//   partial is scaled in fp32.
// - Grid: a CTA owns NT n-tiles (16 NT columns) and one of KS slices of K. x is staged once per CTA
//   for its K slice (rows padded 16 bytes: conflict-free B-fragment reads; by cp.async issued after
//   the first weight blocks, so the DRAM latency of the weights overlaps the L2 reads of x) and its
//   NT x WK warps (n-tile w % NT, K part w / NT) share it: x traffic is M x K x N / (16 NT), which is
//   what makes NT > 1 win from M = 2-4 on wide layers, while NT = 1, KS = 1 (the most CTAs) suits
//   M = 1. Past M = 16 the x slice limits KS from below (it must fit in shared memory).
// - The cross-warp reduction tile reuses the x slice's shared memory once every warp is done.
// - KS > 1: the slices of a column group add their fp32 partials into a workspace with atomics;
//   the last CTA of the group (a counter) converts them to the output and zeroes its workspace and
//   counter for the next call (no memset kernel; CUDA-graph safe, one stream at a time).
constexpr int TL_ROW = 20;               // words per staged row (16 + 4 padding)
constexpr int TL_STAGE = 16 * TL_ROW;    // words per staged block

// ---- pieces shared by the swapped-operand kernels (swap, swapx, wg)

// 128-k block b of the 16-column tile at tp (16 word rows x 16 words) into a warp's staged block
__device__ __forceinline__ void stage_weights(uint32_t* dst, const int4* tp, int b, int N, int lane) {
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    const int idx = lane + 32 * i, row = idx >> 2, quad = idx & 3;
    cp16_stream(dst + row * TL_ROW + quad * 4, tp + ((size_t)(b * 16 + row) * N >> 2) + quad);
  }
}

// the lane's 8 words of a staged block (rows 2c, 2c + 1, 2c + 8, 2c + 9; columns g, g + 8), paired
// so that nibble j of both rows of a pair sits side by side: pr[row pair][column][half]
__device__ __forceinline__ void block_pairs(const uint32_t* st, int g, int c, uint32_t (&pr)[2][2][2]) {
  uint32_t w[8];
#pragma unroll
  for (int r = 0; r < 4; ++r) {
    const int row = 2 * c + (r & 1) + 8 * (r >> 1);
    w[2 * r] = st[row * TL_ROW + g];
    w[2 * r + 1] = st[row * TL_ROW + g + 8];
  }
#pragma unroll
  for (int rp = 0; rp < 2; ++rp)
#pragma unroll
    for (int cc = 0; cc < 2; ++cc) {
      const uint32_t lo = w[2 * (2 * rp) + cc], hi = w[2 * (2 * rp + 1) + cc];
      pr[rp][cc][0] = __byte_perm(lo, hi, 0x5410);
      pr[rp][cc][1] = __byte_perm(lo, hi, 0x7632);
    }
}

// the A fragment of k-step stp: (q - z) exact (z0, z1: MAGIC + z in both halves); with SCALE also
// times the scale pair s0, s1, rounded once to 16 bits
template <bool BF16, bool SCALE>
__device__ __forceinline__ void a_fragment(const uint32_t (&pr)[2][2][2], int stp, uint32_t z0, uint32_t z1,
                                           uint32_t s0, uint32_t s1, uint32_t (&a)[4]) {
  constexpr uint32_t MAGIC2 = Traits<BF16>::MAGIC2;
  const int sh = 4 * (stp & 3), half = stp >> 2;
  a[0] = sub2<BF16>(lop3_codes<MAGIC2>(pr[0][0][half] >> sh), z0);
  a[1] = sub2<BF16>(lop3_codes<MAGIC2>(pr[0][1][half] >> sh), z1);
  a[2] = sub2<BF16>(lop3_codes<MAGIC2>(pr[1][0][half] >> sh), z0);
  a[3] = sub2<BF16>(lop3_codes<MAGIC2>(pr[1][1][half] >> sh), z1);
  if constexpr (SCALE) {
    a[0] = mul2<BF16>(a[0], s0);
    a[1] = mul2<BF16>(a[1], s1);
    a[2] = mul2<BF16>(a[2], s0);
    a[3] = mul2<BF16>(a[3], s1);
  }
}

// 8 values of an x row from k on, zeros past K (the synchronous path: unaligned rows or K % 8)
__device__ __forceinline__ uint4 x_piece(const uint16_t* row, int k, int K) {
  uint32_t h[8];
#pragma unroll
  for (int e = 0; e < 8; ++e) h[e] = k + e < K ? row[k + e] : 0u;
  return make_uint4(h[0] | (h[1] << 16), h[2] | (h[3] << 16), h[4] | (h[5] << 16), h[6] | (h[7] << 16));
}

// whether x's rows can be copied in 16-byte pieces (cp.async)
__device__ __forceinline__ bool x_aligned(const uint16_t* x, int ldx, int K) {
  return ((ldx & 7) == 0) && ((reinterpret_cast<uintptr_t>(x) & 15) == 0) && (K & 7) == 0;
}

// one 16-byte piece of x row `row` from k on into shared memory: cp.async (zero-filled past K) when
// rows are 16-byte aligned and K % 8 == 0, else synchronously
__device__ __forceinline__ void stage_x(void* dst, const uint16_t* x, int row, int ldx, int k, int K, bool x_async) {
  if (x_async) {
    const bool in = k < K;
    cp_small<16>(dst, x + (size_t)row * ldx + (in ? k : 0), in);
  } else {
    *reinterpret_cast<uint4*>(dst) = x_piece(x + (size_t)row * ldx, k, K);
  }
}

// block b's scales (as 16-bit pairs of the activation dtype) and zeros of columns n0, n1
template <bool BF16>
__device__ __forceinline__ void scale_zero(const __half* sc, const uint8_t* zb, int b, int group_blocks, int N, int n0,
                                           int n1, uint32_t (&s2)[2], uint32_t (&z)[2]) {
  const size_t go = (size_t)(b / group_blocks) * N;
  s2[0] = scale2<BF16>(sc[go + n0]);
  s2[1] = scale2<BF16>(sc[go + n1]);
  z[0] = zb[go + n0];
  z[1] = zb[go + n1];
}

// The end of every swapped-operand kernel: acc (MT n-tiles x 4 C values per lane; value i of tile mt
// at acc[4 mt + i]) -> the CTA's reduction tile red (NW, 8 MT, 16) -> the sum of the WK K-parts of
// each of the NT n-tiles -> y (one K slice) or, with KS = gridDim.y > 1 slices, the fp32 workspace
// (16-byte atomics on sm_90), the last CTA of the column group converting it to y and re-zeroing
// it and its counter for the next call (no memset kernel; CUDA-graph safe, one stream at a time).
// The caller has synchronised the CTA (red overlays the x buffer).
template <bool BF16, int MT, int NT, int WK>
__device__ __forceinline__ void reduce_out(float* red, const float* acc, uint16_t* y, float* ws, int* cnt, int M,
                                           int N, int ldy) {
  constexpr int NW = NT * WK;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, c = lane & 3;
  const int KS = gridDim.y, col0 = blockIdx.x * NT * 16;
#pragma unroll
  for (int mt = 0; mt < MT; ++mt) {
    float* rw = red + (size_t)(warp * 8 * MT + mt * 8 + 2 * c) * 16;
    rw[g] = acc[4 * mt];
    rw[16 + g] = acc[4 * mt + 1];
    rw[g + 8] = acc[4 * mt + 2];
    rw[16 + g + 8] = acc[4 * mt + 3];
  }
  __syncthreads();
  for (int i = threadIdx.x; i < 8 * MT * 4 * NT; i += 32 * NW) {  // 4 columns per thread
    const int row = i / (4 * NT), cl = (i - row * 4 * NT) * 4, ntl = cl >> 4, cc = cl & 15;
    if (row >= M) continue;
    float v[4] = {0.f, 0.f, 0.f, 0.f};
#pragma unroll
    for (int q = 0; q < WK; ++q) {
      const float* rr = red + (size_t)((q * NT + ntl) * 8 * MT + row) * 16 + cc;
#pragma unroll
      for (int e = 0; e < 4; ++e) v[e] += rr[e];
    }
    if (KS == 1) {
#pragma unroll
      for (int e = 0; e < 4; ++e)
        y[(size_t)row * ldy + col0 + cl + e] =
            BF16 ? __bfloat16_as_ushort(__float2bfloat16_rn(v[e])) : __half_as_ushort(__float2half_rn(v[e]));
    } else {
      float* p = ws + (size_t)row * N + col0 + cl;
#if __CUDA_ARCH__ >= 900
      atomicAdd(reinterpret_cast<float4*>(p), make_float4(v[0], v[1], v[2], v[3]));
#else
#pragma unroll
      for (int e = 0; e < 4; ++e) atomicAdd(p + e, v[e]);
#endif
    }
  }
  if (KS == 1) return;
  __threadfence();  // this CTA's atomics are visible before the counter moves
  __syncthreads();
  __shared__ int last;
  if (threadIdx.x == 0) last = atomicAdd(cnt + blockIdx.x, 1) == KS - 1;
  __syncthreads();
  if (!last) return;
  __threadfence();
  for (int i = threadIdx.x; i < M * 16 * NT; i += 32 * NW) {
    const int row = i / (16 * NT), cl = i - row * 16 * NT;
    float* p = ws + (size_t)row * N + col0 + cl;
    const float v = __ldcg(p);
    *p = 0.f;  // ready for the next call
    y[(size_t)row * ldy + col0 + cl] =
        BF16 ? __bfloat16_as_ushort(__float2bfloat16_rn(v)) : __half_as_ushort(__float2half_rn(v));
  }
  if (threadIdx.x == 0) cnt[blockIdx.x] = 0;
}

template <bool BF16, int MT, int NT, int WK, int D>
__global__ void __launch_bounds__(32 * NT * WK) w4a16_swap_kernel(
    const uint16_t* __restrict__ x, const uint32_t* __restrict__ qt, const __half* __restrict__ sc,
    const uint8_t* __restrict__ zb, uint16_t* __restrict__ y, float* __restrict__ ws, int* __restrict__ cnt, int M,
    int N, int K, int Kp, int ldx, int ldy, int group_blocks, int xs_stride, int front_bytes) {
  constexpr uint32_t MAGIC2 = Traits<BF16>::MAGIC2;
  constexpr int NW = NT * WK;
  extern __shared__ __align__(16) unsigned char smem[];
  const int nblk = Kp >> 7, KS = gridDim.y;
  const int kb0 = blockIdx.y * nblk / KS, kb1 = (blockIdx.y + 1) * nblk / KS;  // this CTA's K blocks
  uint16_t* xs = reinterpret_cast<uint16_t*>(smem);                           // (M, xs_stride), K slice
  float* red = reinterpret_cast<float*>(smem);  // (NW, 8 MT, 16) after the main loop, over xs
  uint32_t* ring = reinterpret_cast<uint32_t*>(smem + (size_t)front_bytes);   // (NW, D, 16, TL_ROW)

  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int g = lane >> 2, c = lane & 3;
  const int nt = warp % NT, kw = warp / NT;
  const int t = blockIdx.x * NT + nt;  // this warp's 16-column tile
  const int nslice = kb1 - kb0;
  const int b_begin = kb0 + kw * nslice / WK, b_end = kb0 + (kw + 1) * nslice / WK;
  const int n0 = t * 16 + g, n1 = n0 + 8;
  const int4* tp = reinterpret_cast<const int4*>(qt + (size_t)t * 16);
  uint32_t* my_ring = ring + (size_t)warp * D * TL_STAGE;

  float s[D][2];
  uint32_t z[D][2];
  auto load_block = [&](int j, int b) {
    const size_t go = (size_t)(b / group_blocks) * N;
    s[j][0] = __half2float(sc[go + n0]); s[j][1] = __half2float(sc[go + n1]);
    z[j][0] = zb[go + n0]; z[j][1] = zb[go + n1];
    stage_weights(my_ring + j * TL_STAGE, tp, b, N, lane);
  };
  // the x slice [kb0 * 128, kb1 * 128) (L2) by cp.async, then the first D weight blocks of every
  // warp (DRAM): x lands while the weights fly
  const int k8s = nslice * 16, kbase = kb0 * 128;
  const int nx = M * k8s;
  const bool x_async = x_aligned(x, ldx, K);
  for (int i = threadIdx.x; i < nx; i += 32 * NW) {  // 16-byte pieces, zero-filled past K
    const int row = i / k8s, k8 = (i - row * k8s) * 8;
    stage_x(xs + (size_t)row * xs_stride + k8, x, row, ldx, kbase + k8, K, x_async);
  }
  if (x_async) cp_commit();
#pragma unroll
  for (int j = 0; j < D; ++j) {
    if (b_begin + j < b_end) load_block(j, b_begin + j);
    cp_commit();
  }
  if (x_async) cp_wait<D>();  // the x group (older than the D weight groups) has landed
  __syncthreads();

  float acc[MT][4];
#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int i = 0; i < 4; ++i) acc[mt][i] = 0.f;
  const uint32_t* xrow[MT];
  bool xok[MT];
#pragma unroll
  for (int mt = 0; mt < MT; ++mt) {
    const int row = mt * 8 + g;
    xok[mt] = row < M;
    xrow[mt] = reinterpret_cast<const uint32_t*>(xs + (size_t)(xok[mt] ? row : 0) * xs_stride);
  }

  for (int base = b_begin; base < b_end; base += D) {
#pragma unroll
    for (int j = 0; j < D; ++j) {
      const int b = base + j;
      if (b < b_end) {
        cp_wait<D - 1>();
        __syncwarp();
        const uint32_t* st = my_ring + j * TL_STAGE;
        uint32_t pr[2][2][2];
        block_pairs(st, g, c, pr);
        __syncwarp();
        const uint32_t z0 = MAGIC2 + z[j][0] * 0x10001u, z1 = MAGIC2 + z[j][1] * 0x10001u;
        const float s0 = s[j][0], s1 = s[j][1];
        float part[MT][4];
#pragma unroll
        for (int mt = 0; mt < MT; ++mt)
#pragma unroll
          for (int i = 0; i < 4; ++i) part[mt][i] = 0.f;
#pragma unroll
        for (int stp = 0; stp < 8; ++stp) {
          uint32_t a[4];
          a_fragment<BF16, false>(pr, stp, z0, z1, 0u, 0u, a);
          const int kw2 = ((b - kb0) * 128 + stp * 16 + 2 * c) >> 1;
#pragma unroll
          for (int mt = 0; mt < MT; ++mt) {
            const uint32_t b0 = xok[mt] ? xrow[mt][kw2] : 0u, b1 = xok[mt] ? xrow[mt][kw2 + 4] : 0u;
            mma16816<BF16>(part[mt], a, b0, b1);
          }
        }
#pragma unroll
        for (int mt = 0; mt < MT; ++mt) {
          acc[mt][0] += s0 * part[mt][0];
          acc[mt][1] += s0 * part[mt][1];
          acc[mt][2] += s1 * part[mt][2];
          acc[mt][3] += s1 * part[mt][3];
        }
        if (b + D < b_end) load_block(j, b + D);
        cp_commit();
      }
    }
  }
  cp_wait<0>();
  __syncthreads();  // every warp is done with the x slice: the reduction tile goes over it
  reduce_out<BF16, MT, NT, WK>(red, &acc[0][0], y, ws, cnt, M, N, ldy);
}

// the front of a swapped-operand kernel's shared memory: the x buffer, later the reduction tile
inline int front_size(int x_bytes, int red_bytes, int align) {
  return ((x_bytes > red_bytes ? x_bytes : red_bytes) + align - 1) & ~(align - 1);
}

// opts a kernel into `bytes` of dynamic shared memory past 48 KiB (once per larger size)
template <typename Kernel>
cudaError_t smem_opt_in(Kernel kernel, int bytes, int& configured) {
  if (bytes <= 48 * 1024 || bytes <= configured) return cudaSuccess;
  cudaError_t e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes);
  if (e == cudaSuccess) configured = bytes;
  return e;
}

template <bool BF16, int MT, int NT, int WK, int D>
cudaError_t launch_swap_one(cudaStream_t st, int ks, const uint16_t* x, const uint32_t* qt, const __half* sc,
                             const uint8_t* zb, uint16_t* y, float* ws, int* cnt, int M, int N, int K, int Kp,
                             int ldx, int ldy, int gb) {
  const int nblk = Kp >> 7;
  const int slice = (nblk + ks - 1) / ks;  // the most K blocks one CTA takes
  const int xs_stride = slice * 128 + 8;
  const int x_bytes = M * xs_stride * 2, red_bytes = NT * WK * 8 * MT * 16 * 4;
  const int front = front_size(x_bytes, red_bytes, 16);
  const int bytes = front + NT * WK * D * TL_STAGE * 4;
  static int configured = 0;
  if (cudaError_t e = smem_opt_in(w4a16_swap_kernel<BF16, MT, NT, WK, D>, bytes, configured)) return e;
  w4a16_swap_kernel<BF16, MT, NT, WK, D><<<dim3(N / (16 * NT), ks), 32 * NT * WK, bytes, st>>>(
      x, qt, sc, zb, y, ws, cnt, M, N, K, Kp, ldx, ldy, gb, xs_stride, front);
  return cudaGetLastError();
}

#define GR_ARGS st, ks, x, qt, sc, zb, y, ws, cnt, M, N, K, Kp, ldx, ldy, gb
template <bool BF16, int MT>
cudaError_t launch_swap_mt(int nt, int wk, int ks, cudaStream_t st, const uint16_t* x, const uint32_t* qt,
                            const __half* sc, const uint8_t* zb, uint16_t* y, float* ws, int* cnt, int M, int N,
                            int K, int Kp, int ldx, int ldy, int gb) {
  if constexpr (MT <= 2) {  // decode: M <= 16
    if (nt == 1 && wk == 4) return launch_swap_one<BF16, MT, 1, 4, 2>(GR_ARGS);
    if (nt == 1 && wk == 8) return launch_swap_one<BF16, MT, 1, 8, 2>(GR_ARGS);
    if (nt == 1 && wk == 16) return launch_swap_one<BF16, MT, 1, 16, 2>(GR_ARGS);
    if (nt == 2 && wk == 4) return launch_swap_one<BF16, MT, 2, 4, 2>(GR_ARGS);
    if (nt == 4 && wk == 2) return launch_swap_one<BF16, MT, 4, 2, 2>(GR_ARGS);
    if (nt == 4 && wk == 4) return launch_swap_one<BF16, MT, 4, 4, 2>(GR_ARGS);
    if (nt == 8 && wk == 2) return launch_swap_one<BF16, MT, 8, 2, 2>(GR_ARGS);
  } else {  // 16 < M <= 64: wider CTAs share the (larger) x slice
    if (nt == 4 && wk == 2) return launch_swap_one<BF16, MT, 4, 2, 2>(GR_ARGS);
    if (nt == 4 && wk == 4) return launch_swap_one<BF16, MT, 4, 4, 2>(GR_ARGS);
    if (nt == 8 && wk == 1) return launch_swap_one<BF16, MT, 8, 1, 2>(GR_ARGS);
    if (nt == 8 && wk == 2) return launch_swap_one<BF16, MT, 8, 2, 2>(GR_ARGS);
    if (nt == 16 && wk == 1) return launch_swap_one<BF16, MT, 16, 1, 2>(GR_ARGS);
  }
  return cudaErrorInvalidValue;
}
#undef GR_ARGS

// ---------------------------------------------------------------------------------------------
// The same operands and arithmetic for 8 < M <= 64 with x streamed (Marlin's structure): instead of
// one staged K slice of x per CTA (whose size forces K splits, and whose atomics then grow with
// M x N x KS), x comes through a CTA-wide D-stage cp.async ring beside each warp's weight ring.
// Step i stages x for the WK consecutive 128-k blocks kb0 + i WK + [0, WK) (rows padded 16 bytes)
// and warp (n-tile w % NT, kw = w / NT) its weight block kb0 + i WK + kw; one barrier per step
// (slot i % D has landed for every thread, slot (i - 1) % D is free to refill). K splits (KS > 1)
// add through the workspace with 16-byte atomics (sm_90), the last CTA converting as above.
// Unlike the staged kernel, the scale goes into the A fragment ((q - z) exact, times s, rounded once
// to 16 bits, as a dequantized weight), so the mma accumulates straight into the output
// registers: at MT = 8 the per-block partials would cost 32 registers and spill at 16 warps.
template <bool BF16, int MT, int NT, int WK, int D>
__global__ void __launch_bounds__(32 * NT * WK) w4a16_swapx_kernel(
    const uint16_t* __restrict__ x, const uint32_t* __restrict__ qt, const __half* __restrict__ sc,
    const uint8_t* __restrict__ zb, uint16_t* __restrict__ y, float* __restrict__ ws, int* __restrict__ cnt, int M,
    int N, int K, int Kp, int ldx, int ldy, int group_blocks, int front_bytes) {
  constexpr uint32_t MAGIC2 = Traits<BF16>::MAGIC2;
  constexpr int NW = NT * WK;
  constexpr int XROW = WK * 128 + 8;  // halfs per staged x row
  extern __shared__ __align__(16) unsigned char smem[];
  const int nblk = Kp >> 7, KS = gridDim.y;
  const int kb0 = blockIdx.y * nblk / KS, kb1 = (blockIdx.y + 1) * nblk / KS;
  const int nsteps = (kb1 - kb0 + WK - 1) / WK;
  uint16_t* xr = reinterpret_cast<uint16_t*>(smem);                           // (D, M, XROW)
  float* red = reinterpret_cast<float*>(smem);                                 // (NW, 8 MT, 16), after the loop
  uint32_t* ring = reinterpret_cast<uint32_t*>(smem + (size_t)front_bytes);   // (NW, D, 16, TL_ROW)
  const int xslot = M * XROW;

  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int g = lane >> 2, c = lane & 3;
  const int nt = warp % NT, kw = warp / NT;
  const int t = blockIdx.x * NT + nt;
  const int n0 = t * 16 + g, n1 = n0 + 8;
  const int4* tp = reinterpret_cast<const int4*>(qt + (size_t)t * 16);
  uint32_t* my_ring = ring + (size_t)warp * D * TL_STAGE;
  const bool x_async = x_aligned(x, ldx, K);

  uint32_t s2[D][2];  // scales, in both halves of a 16-bit pair
  uint32_t z[D][2];
  auto issue = [&](int j, int i) {  // step i into slot j (one commit group per call, even past the end)
    if (i < nsteps) {
      const int kx = (kb0 + i * WK) * 128;
      uint16_t* xd = xr + (size_t)j * xslot;
      for (int p = threadIdx.x; p < M * WK * 16; p += 32 * NW) {
        const int row = p / (WK * 16), k8 = (p - row * (WK * 16)) * 8;
        stage_x(xd + row * XROW + k8, x, row, ldx, kx + k8, K, x_async);
      }
      const int b = kb0 + i * WK + kw;
      if (b < kb1) {
        scale_zero<BF16>(sc, zb, b, group_blocks, N, n0, n1, s2[j], z[j]);
        stage_weights(my_ring + j * TL_STAGE, tp, b, N, lane);
      }
    }
    cp_commit();
  };
#pragma unroll
  for (int j = 0; j < D - 1; ++j) issue(j, j);

  float acc[MT][4];
#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int i = 0; i < 4; ++i) acc[mt][i] = 0.f;
  int xoff[MT];  // word offset of this lane's x row in a slot (rows >= M read as zeros)
  bool xok[MT];
#pragma unroll
  for (int mt = 0; mt < MT; ++mt) {
    const int row = mt * 8 + g;
    xok[mt] = row < M;
    xoff[mt] = (xok[mt] ? row : 0) * (XROW / 2) + kw * 64 + c;
  }

  for (int base = 0; base < nsteps; base += D) {
#pragma unroll
    for (int j = 0; j < D; ++j) {
      const int i = base + j;
      if (i < nsteps) {  // uniform across the CTA
        cp_wait<D - 2>();  // step i has landed (this thread's copies)
        __syncthreads();   // ... every thread's; and slot (i - 1) % D is read by no one
        issue((j + D - 1) % D, i + D - 1);
        if (kb0 + i * WK + kw < kb1) {
          const uint32_t* st = my_ring + j * TL_STAGE;
          const uint32_t* xw = reinterpret_cast<const uint32_t*>(xr + (size_t)j * xslot);
          uint32_t pr[2][2][2];
          block_pairs(st, g, c, pr);
          const uint32_t z0 = MAGIC2 + z[j][0] * 0x10001u, z1 = MAGIC2 + z[j][1] * 0x10001u;
          const uint32_t s0 = s2[j][0], s1 = s2[j][1];
#pragma unroll
          for (int stp = 0; stp < 8; ++stp) {
            uint32_t a[4];  // (q - z) exact, times the scale: one rounding to 16 bits
            a_fragment<BF16, true>(pr, stp, z0, z1, s0, s1, a);
#pragma unroll
            for (int mt = 0; mt < MT; ++mt) {
              const uint32_t b0 = xok[mt] ? xw[xoff[mt] + stp * 8] : 0u, b1 = xok[mt] ? xw[xoff[mt] + stp * 8 + 4] : 0u;
              mma16816<BF16>(acc[mt], a, b0, b1);
            }
          }
        }
      }
    }
  }
  cp_wait<0>();
  __syncthreads();  // the x ring is free: the reduction tile goes over it
  reduce_out<BF16, MT, NT, WK>(red, &acc[0][0], y, ws, cnt, M, N, ldy);
}

constexpr int SWAPX_D = 3;

template <bool BF16, int MT, int NT, int WK>
cudaError_t launch_swapx_one(cudaStream_t st, int ks, const uint16_t* x, const uint32_t* qt, const __half* sc,
                              const uint8_t* zb, uint16_t* y, float* ws, int* cnt, int M, int N, int K, int Kp,
                              int ldx, int ldy, int gb) {
  constexpr int D = SWAPX_D;
  const int x_bytes = D * M * (WK * 128 + 8) * 2, red_bytes = NT * WK * 8 * MT * 16 * 4;
  const int front = front_size(x_bytes, red_bytes, 16);
  const int bytes = front + NT * WK * D * TL_STAGE * 4;
  static int configured = 0;
  if (cudaError_t e = smem_opt_in(w4a16_swapx_kernel<BF16, MT, NT, WK, D>, bytes, configured)) return e;
  w4a16_swapx_kernel<BF16, MT, NT, WK, D><<<dim3(N / (16 * NT), ks), 32 * NT * WK, bytes, st>>>(
      x, qt, sc, zb, y, ws, cnt, M, N, K, Kp, ldx, ldy, gb, front);
  return cudaGetLastError();
}

#define GX_ARGS st, ks, x, qt, sc, zb, y, ws, cnt, M, N, K, Kp, ldx, ldy, gb
template <bool BF16, int MT>
cudaError_t launch_swapx_mt(int nt, int wk, int ks, cudaStream_t st, const uint16_t* x, const uint32_t* qt,
                             const __half* sc, const uint8_t* zb, uint16_t* y, float* ws, int* cnt, int M, int N,
                             int K, int Kp, int ldx, int ldy, int gb) {
  if (nt == 2 && wk == 2) return launch_swapx_one<BF16, MT, 2, 2>(GX_ARGS);
  if (nt == 4 && wk == 1) return launch_swapx_one<BF16, MT, 4, 1>(GX_ARGS);
  if (nt == 4 && wk == 2) return launch_swapx_one<BF16, MT, 4, 2>(GX_ARGS);
  if (nt == 8 && wk == 1) return launch_swapx_one<BF16, MT, 8, 1>(GX_ARGS);
  if (nt == 8 && wk == 2) return launch_swapx_one<BF16, MT, 8, 2>(GX_ARGS);
  if (nt == 16 && wk == 1) return launch_swapx_one<BF16, MT, 16, 1>(GX_ARGS);
  return cudaErrorInvalidValue;
}
#undef GX_ARGS


// ---------------------------------------------------------------------------------------------
// Hopper (sm_90a) variant for 8 < M <= 64: warpgroup MMA with the weights' A fragments in
// registers and x in shared memory read by the tensor cores themselves (wgmma.mma_async
// m64nNk16, N = 8 MT). The streamed-x kernel above spends two 32-bit shared loads per mma on x;
// here a warpgroup (4 warps = 4 adjacent 16-column tiles = the instruction's 64 rows) issues one
// wgmma per 16-k step that reads x from shared memory directly.
// - x: a CTA-wide D-stage cp.async ring, one 128-k block per stage, in the no-swizzle K-major core
//   matrix layout (8 rows x 16 bytes per 128-byte core matrix; K-adjacent core matrices 128 bytes
//   apart (LBO), 8-row groups 2 KiB apart (SBO)); rows M .. 8 MT - 1 zeroed once.
// - weights: each warp's own ring, dequantized as in the kernels above (scale folded into A), all
//   8 k-steps of a block into registers, then 8 wgmma issued back to back and waited for (other
//   warpgroups dequantize meanwhile). Keeping the wgmma of one block in flight while dequantizing
//   the next (two register sets, x prefetched D - 2 ahead) measured the same (77.7 us at
//   4096 x 28672, M = 64), so this simpler form stays.
// - cp.async writes through the generic proxy and wgmma reads through the async proxy, hence the
//   fence.proxy.async before the per-step barrier.
#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define ES_WGMMA 1
#else
#define ES_WGMMA 0
#endif

// wgmma m64nNk16 (N = 16, 32, 64), A from registers (4 per thread), B from shared memory (descriptor),
// fp32 accumulators d (N / 2 per thread), D += A B (scale-d predicate 1)
#define ES_DF8(i) "+f"(d[i]), "+f"(d[i + 1]), "+f"(d[i + 2]), "+f"(d[i + 3]), "+f"(d[i + 4]), "+f"(d[i + 5]), \
                  "+f"(d[i + 6]), "+f"(d[i + 7])
#define ES_WG_IN "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc), "r"(1)
#define ES_WG_ASM(SHAPE, TY, DREGS, AREGS, DESC, PRED)                                             \
  "{\n.reg .pred p;\nsetp.ne.b32 p, %" PRED ", 0;\nwgmma.mma_async.sync.aligned." SHAPE ".f32." TY "." TY \
  " {" DREGS "}, {" AREGS "}, %" DESC ", p, 1, 1, 0;\n}\n"
#define ES_D16 "%0,%1,%2,%3,%4,%5,%6,%7"
#define ES_D32 ES_D16 ",%8,%9,%10,%11,%12,%13,%14,%15"
#define ES_D64 ES_D32 ",%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31"
#define ES_WG16(TY) asm volatile(ES_WG_ASM("m64n16k16", TY, ES_D16, "%8,%9,%10,%11", "12", "13") : ES_DF8(0) : ES_WG_IN)
#define ES_WG32(TY)                                                                         \
  asm volatile(ES_WG_ASM("m64n32k16", TY, ES_D32, "%16,%17,%18,%19", "20", "21")           \
               : ES_DF8(0), ES_DF8(8)                                                       \
               : ES_WG_IN)
#define ES_WG64(TY)                                                                         \
  asm volatile(ES_WG_ASM("m64n64k16", TY, ES_D64, "%32,%33,%34,%35", "36", "37")           \
               : ES_DF8(0), ES_DF8(8), ES_DF8(16), ES_DF8(24)                               \
               : ES_WG_IN)

template <bool BF16, int MT>
__device__ __forceinline__ void wgmma_rs(float* d, const uint32_t* a, uint64_t desc) {
#if ES_WGMMA
  if constexpr (MT == 2) {
    if constexpr (BF16) ES_WG16("bf16"); else ES_WG16("f16");
  } else if constexpr (MT == 4) {
    if constexpr (BF16) ES_WG32("bf16"); else ES_WG32("f16");
  } else {
    static_assert(MT == 8, "wgmma N = 8 MT in {16, 32, 64}");
    if constexpr (BF16) ES_WG64("bf16"); else ES_WG64("f16");
  }
#endif
}

// keeps registers live and unmoved across the asynchronous wgmma (the compiler does not know that
// the instruction still reads them after it is issued)
__device__ __forceinline__ void pin4(uint32_t* a) {
  asm volatile("" : "+r"(a[0]), "+r"(a[1]), "+r"(a[2]), "+r"(a[3])::"memory");
}
__device__ __forceinline__ void pin4f(float* d) {
  asm volatile("" : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])::"memory");
}

// no-swizzle shared-memory matrix descriptor: start, LBO (K-adjacent core matrices), SBO (8-row groups)
__device__ __forceinline__ uint64_t wg_desc(const void* p, uint32_t lbo, uint32_t sbo) {
  const uint32_t a = smem_addr(p);
  return (uint64_t)((a >> 4) & 0x3FFF) | ((uint64_t)((lbo >> 4) & 0x3FFF) << 16) |
         ((uint64_t)((sbo >> 4) & 0x3FFF) << 32);
}

constexpr int WG_XCORE = 128;        // bytes per core matrix (8 rows x 16 bytes)
constexpr int WG_XGROUP = 16 * 128;  // bytes per 8 rows of one 128-k block

template <bool BF16, int MT, int WG, int D>
__global__ void __launch_bounds__(128 * WG) w4a16_wg_kernel(
    const uint16_t* __restrict__ x, const uint32_t* __restrict__ qt, const __half* __restrict__ sc,
    const uint8_t* __restrict__ zb, uint16_t* __restrict__ y, float* __restrict__ ws, int* __restrict__ cnt, int M,
    int N, int K, int Kp, int ldx, int ldy, int group_blocks, int front_bytes) {
#if ES_WGMMA
  constexpr uint32_t MAGIC2 = Traits<BF16>::MAGIC2;
  constexpr int NW = 4 * WG;
  constexpr int XS = MT * WG_XGROUP;  // bytes per x stage (8 MT rows x 128 k)
  static_assert(D >= 2, "a ring of at least two stages");
  extern __shared__ __align__(16) unsigned char smem[];
  const int nblk = Kp >> 7, KS = gridDim.y;
  const int kb0 = blockIdx.y * nblk / KS, kb1 = (blockIdx.y + 1) * nblk / KS;
  const int nsteps = kb1 - kb0;
  unsigned char* xr = smem;                                                    // (D, XS)
  float* red = reinterpret_cast<float*>(smem);                                 // after the loop
  uint32_t* ring = reinterpret_cast<uint32_t*>(smem + (size_t)front_bytes);   // (NW, D, 16, TL_ROW)

  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int g = lane >> 2, c = lane & 3;
  const int t = blockIdx.x * NW + warp;
  const int n0 = t * 16 + g, n1 = n0 + 8;
  const int4* tp = reinterpret_cast<const int4*>(qt + (size_t)t * 16);
  uint32_t* my_ring = ring + (size_t)warp * D * TL_STAGE;
  const bool x_async = x_aligned(x, ldx, K);

  // rows M .. 8 MT - 1 of every stage: zeros, never written again
  for (int i = threadIdx.x; i < D * (8 * MT - M) * 16; i += 128 * WG) {
    const int j = i / ((8 * MT - M) * 16), rem = i - j * (8 * MT - M) * 16, row = M + rem / 16, q = rem % 16;
    *reinterpret_cast<uint4*>(xr + j * XS + (row >> 3) * WG_XGROUP + q * WG_XCORE + (row & 7) * 16) = make_uint4(0, 0, 0, 0);
  }

  uint32_t s2[D][2], z[D][2];
  auto issue = [&](int j, int i) {
    if (i < nsteps) {
      const int b = kb0 + i, kx = b * 128;
      unsigned char* xd = xr + j * XS;
      for (int p = threadIdx.x; p < M * 16; p += 128 * WG) {
        const int row = p >> 4, q = p & 15;
        stage_x(xd + (row >> 3) * WG_XGROUP + q * WG_XCORE + (row & 7) * 16, x, row, ldx, kx + q * 8, K, x_async);
      }
      scale_zero<BF16>(sc, zb, b, group_blocks, N, n0, n1, s2[j], z[j]);
      stage_weights(my_ring + j * TL_STAGE, tp, b, N, lane);
    }
    cp_commit();
  };
#pragma unroll
  for (int j = 0; j < D - 1; ++j) issue(j, j);

  float acc[4 * MT];
#pragma unroll
  for (int i = 0; i < 4 * MT; ++i) acc[i] = 0.f;

  for (int base = 0; base < nsteps; base += D) {
#pragma unroll
    for (int j = 0; j < D; ++j) {
      const int i = base + j;
      if (i < nsteps) {
        cp_wait<D - 2>();
        asm volatile("fence.proxy.async.shared::cta;" ::: "memory");  // x by cp.async -> read by wgmma
        __syncthreads();
        issue((j + D - 1) % D, i + D - 1);
        const uint32_t* st = my_ring + j * TL_STAGE;
        uint32_t pr[2][2][2];
        block_pairs(st, g, c, pr);
        const uint32_t z0 = MAGIC2 + z[j][0] * 0x10001u, z1 = MAGIC2 + z[j][1] * 0x10001u;
        const uint32_t s0 = s2[j][0], s1 = s2[j][1];
        uint32_t a[8][4];
#pragma unroll
        for (int stp = 0; stp < 8; ++stp) {
          a_fragment<BF16, true>(pr, stp, z0, z1, s0, s1, a[stp]);
          pin4(a[stp]);
        }
#pragma unroll
        for (int q = 0; q < MT; ++q) pin4f(acc + 4 * q);
        asm volatile("wgmma.fence.sync.aligned;" ::: "memory");
        const unsigned char* xs = xr + j * XS;
#pragma unroll
        for (int stp = 0; stp < 8; ++stp)
          wgmma_rs<BF16, MT>(acc, a[stp], wg_desc(xs + stp * 2 * WG_XCORE, WG_XCORE, WG_XGROUP));
        asm volatile("wgmma.commit_group.sync.aligned;" ::: "memory");
        asm volatile("wgmma.wait_group.sync.aligned 0;" ::: "memory");
#pragma unroll
        for (int stp = 0; stp < 8; ++stp) pin4(a[stp]);
#pragma unroll
        for (int q = 0; q < MT; ++q) pin4f(acc + 4 * q);
      }
    }
  }
  cp_wait<0>();
  __syncthreads();  // the x ring is free: the reduction tile goes over it
  reduce_out<BF16, MT, NW, 1>(red, acc, y, ws, cnt, M, N, ldy);
#else
  __trap();  // built only for sm_90a (the host refuses other devices)
#endif
}

constexpr int WG_D = 4;

template <bool BF16, int MT, int WG>
cudaError_t launch_wg_one(cudaStream_t st, int ks, const uint16_t* x, const uint32_t* qt, const __half* sc,
                          const uint8_t* zb, uint16_t* y, float* ws, int* cnt, int M, int N, int K, int Kp, int ldx,
                          int ldy, int gb) {
  constexpr int D = WG_D;
  const int x_bytes = D * MT * WG_XGROUP, red_bytes = 4 * WG * 8 * MT * 16 * 4;
  const int front = front_size(x_bytes, red_bytes, 128);
  const int bytes = front + 4 * WG * D * TL_STAGE * 4;
  static int configured = 0;
  if (cudaError_t e = smem_opt_in(w4a16_wg_kernel<BF16, MT, WG, D>, bytes, configured)) return e;
  w4a16_wg_kernel<BF16, MT, WG, D><<<dim3(N / (64 * WG), ks), 128 * WG, bytes, st>>>(
      x, qt, sc, zb, y, ws, cnt, M, N, K, Kp, ldx, ldy, gb, front);
  return cudaGetLastError();
}

template <bool BF16, int MT>
cudaError_t launch_wg_mt(int wg, int ks, cudaStream_t st, const uint16_t* x, const uint32_t* qt, const __half* sc,
                         const uint8_t* zb, uint16_t* y, float* ws, int* cnt, int M, int N, int K, int Kp, int ldx,
                         int ldy, int gb) {
  if (wg == 1) return launch_wg_one<BF16, MT, 1>(st, ks, x, qt, sc, zb, y, ws, cnt, M, N, K, Kp, ldx, ldy, gb);
  if (wg == 2) return launch_wg_one<BF16, MT, 2>(st, ks, x, qt, sc, zb, y, ws, cnt, M, N, K, Kp, ldx, ldy, gb);
  if (wg == 4) return launch_wg_one<BF16, MT, 4>(st, ks, x, qt, sc, zb, y, ws, cnt, M, N, K, Kp, ldx, ldy, gb);
  return cudaErrorInvalidValue;
}


// ---- the host entries' shared plumbing (kernels on the Triton layout)

struct TlArgs {  // one call's operands
  const uint16_t* x;
  const uint32_t* qt;
  const __half* sc;
  const uint8_t* zb;
  uint16_t* y;
  float* ws;
  int* cnt;
  int M, N, K, Kp, ldx, ldy, gb;
};
#define TL_ARGS a.x, a.qt, a.sc, a.zb, a.y, a.ws, a.cnt, a.M, a.N, a.K, a.Kp, a.ldx, a.ldy, a.gb

TlArgs tl_args(const void* x, const void* qt, const void* sc, const void* zb, void* y, void* ws, void* cnt, int M, int N,
               int K, int Kp, int ldx, int ldy, int gb) {
  return TlArgs{static_cast<const uint16_t*>(x), static_cast<const uint32_t*>(qt), static_cast<const __half*>(sc),
                static_cast<const uint8_t*>(zb), static_cast<uint16_t*>(y), static_cast<float*>(ws),
                static_cast<int*>(cnt), M, N, K, Kp, ldx, ldy, gb};
}

// M -> MT = ceil(M / 8) (from MT_MIN up to 8) and the dtype, as compile-time arguments of f
template <int MT_MIN, typename F>
int by_rows(int M, int bf16, F&& f) {
  auto go = [&](auto b) -> int {
    if constexpr (MT_MIN <= 1) {
      if (M <= 8) return f(b, std::integral_constant<int, 1>{});
    }
    if (M <= 16) return f(b, std::integral_constant<int, 2>{});
    if (M <= 32) return f(b, std::integral_constant<int, 4>{});
    return f(b, std::integral_constant<int, 8>{});
  };
  return bf16 ? go(std::true_type{}) : go(std::false_type{});
}

}  // namespace

// Returns a cudaError_t (0 = launched). The caller checks shapes (w4a16_mma.py): 1 <= M <= 16,
// N % 32 == 0, Kp % 128 == 0, K even, x rows 4-byte aligned, group_blocks = group_size / 128 >= 1.
// depth: pipeline stages, 128-k blocks per warp in shared memory (3, 4, 6); wk: warps per CTA
// splitting K (4, 8).
extern "C" int edgeserve_w4a16_mma(const void* x, const void* qw, const void* sc, const void* zc, void* y, int M,
                                   int N, int K, int Kp, int ldx, int ldy, int group_blocks, int bf16, int depth,
                                   int wk, void* stream) {
  cudaStream_t st = reinterpret_cast<cudaStream_t>(stream);
  auto* xp = static_cast<const uint16_t*>(x);
  auto* qp = static_cast<const int4*>(qw);
  auto* sp = static_cast<const float*>(sc);
  auto* zp = static_cast<const uint32_t*>(zc);
  auto* yp = static_cast<uint16_t*>(y);
  if (M <= 0) return 0;
  return bf16 ? (int)launch<true>(depth, wk, st, xp, qp, sp, zp, yp, M, N, K, Kp, ldx, ldy, group_blocks)
              : (int)launch<false>(depth, wk, st, xp, qp, sp, zp, yp, M, N, K, Kp, ldx, ldy, group_blocks);
}

// The swapped-operand kernel on the Triton layout (fp16 scales, uint8 zeros), 1 <= M <= 64: nt n-tiles
// of 16 columns per CTA, wk warps per n-tile splitting the CTA's K slice, ks K slices (grid.y); the
// (nt, wk) built depend on M (launch_swap_mt). ws: fp32 (M, N) zeros, cnt: int32 (N / (16 nt))
// zeros, both left zeroed by the call. N % (16 nt) == 0.
extern "C" int edgeserve_w4a16_swap(const void* x, const void* qt, const void* sc, const void* zb, void* y, void* ws,
                                     void* cnt, int M, int N, int K, int Kp, int ldx, int ldy, int group_blocks,
                                     int bf16, int nt, int wk, int ks, void* stream) {
  const TlArgs a = tl_args(x, qt, sc, zb, y, ws, cnt, M, N, K, Kp, ldx, ldy, group_blocks);
  cudaStream_t st = reinterpret_cast<cudaStream_t>(stream);
  if (M <= 0) return 0;
  if (M > 64 || ks < 1) return (int)cudaErrorInvalidValue;
  return by_rows<1>(M, bf16, [&](auto b, auto mt) {
    return (int)launch_swap_mt<decltype(b)::value, decltype(mt)::value>(nt, wk, ks, st, TL_ARGS);
  });
}

// The streamed-x variant (w4a16_swapx_kernel), 8 < M <= 64, same operands and contract as above;
// (nt, wk) in launch_swapx_mt.
extern "C" int edgeserve_w4a16_swapx(const void* x, const void* qt, const void* sc, const void* zb, void* y, void* ws,
                                      void* cnt, int M, int N, int K, int Kp, int ldx, int ldy, int group_blocks,
                                      int bf16, int nt, int wk, int ks, void* stream) {
  const TlArgs a = tl_args(x, qt, sc, zb, y, ws, cnt, M, N, K, Kp, ldx, ldy, group_blocks);
  cudaStream_t st = reinterpret_cast<cudaStream_t>(stream);
  if (M <= 0) return 0;
  if (M <= 8 || M > 64 || ks < 1) return (int)cudaErrorInvalidValue;
  return by_rows<2>(M, bf16, [&](auto b, auto mt) {
    return (int)launch_swapx_mt<decltype(b)::value, decltype(mt)::value>(nt, wk, ks, st, TL_ARGS);
  });
}

// The Hopper warpgroup-MMA variant (w4a16_wg_kernel), 8 < M <= 64, sm_90a only; wg warpgroups
// (64 columns each) per CTA, ks K slices. Same operands and contract as above.
extern "C" int edgeserve_w4a16_wg(const void* x, const void* qt, const void* sc, const void* zb, void* y, void* ws,
                                   void* cnt, int M, int N, int K, int Kp, int ldx, int ldy, int group_blocks,
                                   int bf16, int wg, int ks, void* stream) {
  const TlArgs a = tl_args(x, qt, sc, zb, y, ws, cnt, M, N, K, Kp, ldx, ldy, group_blocks);
  cudaStream_t st = reinterpret_cast<cudaStream_t>(stream);
  if (M <= 0) return 0;
  if (M <= 8 || M > 64 || ks < 1) return (int)cudaErrorInvalidValue;
  return by_rows<2>(M, bf16, [&](auto b, auto mt) {
    return (int)launch_wg_mt<decltype(b)::value, decltype(mt)::value>(wg, ks, st, TL_ARGS);
  });
}
