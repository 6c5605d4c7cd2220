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

template <bool BF16>
__device__ __forceinline__ uint32_t sub2(uint32_t a, uint32_t b) {
  uint32_t d;
  if constexpr (BF16) {
    __nv_bfloat162 r = __hsub2(*reinterpret_cast<__nv_bfloat162*>(&a), *reinterpret_cast<__nv_bfloat162*>(&b));
    d = *reinterpret_cast<uint32_t*>(&r);
  } else {
    __half2 r = __hsub2(*reinterpret_cast<__half2*>(&a), *reinterpret_cast<__half2*>(&b));
    d = *reinterpret_cast<uint32_t*>(&r);
  }
  return d;
}

template <bool BF16>
__device__ __forceinline__ uint32_t mul2(uint32_t a, uint32_t b) {
  uint32_t d;
  if constexpr (BF16) {
    __nv_bfloat162 r = __hmul2(*reinterpret_cast<__nv_bfloat162*>(&a), *reinterpret_cast<__nv_bfloat162*>(&b));
    d = *reinterpret_cast<uint32_t*>(&r);
  } else {
    __half2 r = __hmul2(*reinterpret_cast<__half2*>(&a), *reinterpret_cast<__half2*>(&b));
    d = *reinterpret_cast<uint32_t*>(&r);
  }
  return d;
}

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
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      const int idx = lane + 32 * i, row = idx >> 2, quad = idx & 3;
      cp16_stream(my_ring + j * TL_STAGE + row * TL_ROW + quad * 4, tp + ((size_t)(b * 16 + row) * N >> 2) + quad);
    }
  };
  // the x slice [kb0 * 128, kb1 * 128) (L2) by cp.async, then the first D weight blocks of every
  // warp (DRAM): x lands while the weights fly
  const int k8s = nslice * 16, kbase = kb0 * 128;
  const int nx = M * k8s;
  const bool x_async = ((ldx & 7) == 0) && ((reinterpret_cast<uintptr_t>(x) & 15) == 0) && (K & 7) == 0;
  if (x_async) {
    for (int i = threadIdx.x; i < nx; i += 32 * NW) {  // 16-byte pieces, zero-filled past K
      const int row = i / k8s, k8 = (i - row * k8s) * 8;
      const bool in = kbase + k8 < K;
      cp_small<16>(xs + (size_t)row * xs_stride + k8, x + (size_t)row * ldx + (in ? kbase + k8 : 0), in);
    }
    cp_commit();
  } else {
    for (int i = threadIdx.x; i < nx; i += 32 * NW) {
      const int row = i / k8s, k8 = (i - row * k8s) * 8;
      const uint16_t* src = x + (size_t)row * ldx + kbase + k8;
      uint32_t h[8];
#pragma unroll
      for (int e = 0; e < 8; ++e) h[e] = kbase + k8 + e < K ? src[e] : 0u;
      *reinterpret_cast<uint4*>(xs + (size_t)row * xs_stride + k8) =
          make_uint4(h[0] | (h[1] << 16), h[2] | (h[3] << 16), h[4] | (h[5] << 16), h[6] | (h[7] << 16));
    }
  }
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
        uint32_t w[8];
#pragma unroll
        for (int r = 0; r < 4; ++r) {
          const int row = 2 * c + (r & 1) + 8 * (r >> 1);
          w[2 * r] = st[row * TL_ROW + g];
          w[2 * r + 1] = st[row * TL_ROW + g + 8];
        }
        __syncwarp();
        uint32_t pr[2][2][2];
#pragma unroll
        for (int rp = 0; rp < 2; ++rp)
#pragma unroll
          for (int cc = 0; cc < 2; ++cc) {
            const uint32_t lo = w[2 * (2 * rp) + cc], hi = w[2 * (2 * rp + 1) + cc];
            pr[rp][cc][0] = __byte_perm(lo, hi, 0x5410);
            pr[rp][cc][1] = __byte_perm(lo, hi, 0x7632);
          }
        const uint32_t z0 = MAGIC2 + z[j][0] * 0x10001u, z1 = MAGIC2 + z[j][1] * 0x10001u;
        const float s0 = s[j][0], s1 = s[j][1];
        float part[MT][4];
#pragma unroll
        for (int mt = 0; mt < MT; ++mt)
#pragma unroll
          for (int i = 0; i < 4; ++i) part[mt][i] = 0.f;
#pragma unroll
        for (int stp = 0; stp < 8; ++stp) {
          const int sh = 4 * (stp & 3), half = stp >> 2;
          uint32_t a[4];
          a[0] = sub2<BF16>(lop3_codes<MAGIC2>(pr[0][0][half] >> sh), z0);
          a[1] = sub2<BF16>(lop3_codes<MAGIC2>(pr[0][1][half] >> sh), z1);
          a[2] = sub2<BF16>(lop3_codes<MAGIC2>(pr[1][0][half] >> sh), z0);
          a[3] = sub2<BF16>(lop3_codes<MAGIC2>(pr[1][1][half] >> sh), z1);
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

#pragma unroll
  for (int mt = 0; mt < MT; ++mt) {
    float* rw = red + (size_t)(warp * 8 * MT + mt * 8 + 2 * c) * 16;
    rw[g] = acc[mt][0];
    rw[16 + g] = acc[mt][1];
    rw[g + 8] = acc[mt][2];
    rw[16 + g + 8] = acc[mt][3];
  }
  __syncthreads();
  // (8 MT rows) x (16 NT columns) of this CTA: sum the WK K-parts of each n-tile
  const int col0 = blockIdx.x * NT * 16;
  for (int i = threadIdx.x; i < 8 * MT * 16 * NT; i += 32 * NW) {
    const int row = i / (16 * NT), cl = i - row * 16 * NT, ntl = cl >> 4, cc = cl & 15;
    if (row < M) {
      float v = 0.f;
#pragma unroll
      for (int q = 0; q < WK; ++q) v += red[(size_t)((q * NT + ntl) * 8 * MT + row) * 16 + cc];
      if (KS == 1) {
        y[(size_t)row * ldy + col0 + cl] =
            BF16 ? __bfloat16_as_ushort(__float2bfloat16_rn(v)) : __half_as_ushort(__float2half_rn(v));
      } else {
        atomicAdd(ws + (size_t)row * N + col0 + cl, v);
      }
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
cudaError_t launch_swap_one(cudaStream_t st, int ks, const uint16_t* x, const uint32_t* qt, const __half* sc,
                             const uint8_t* zb, uint16_t* y, float* ws, int* cnt, int M, int N, int K, int Kp,
                             int ldx, int ldy, int gb) {
  const int nblk = Kp >> 7;
  const int slice = (nblk + ks - 1) / ks;  // the most K blocks one CTA takes
  const int xs_stride = slice * 128 + 8;
  const int x_bytes = M * xs_stride * 2, red_bytes = NT * WK * 8 * MT * 16 * 4;
  const int front = ((x_bytes > red_bytes ? x_bytes : red_bytes) + 15) & ~15;  // x slice, later the reduction
  const int bytes = front + NT * WK * D * TL_STAGE * 4;
  static int configured = 0;
  if (bytes > 48 * 1024 && bytes > configured) {
    cudaError_t e = cudaFuncSetAttribute(w4a16_swap_kernel<BF16, MT, NT, WK, D>,
                                         cudaFuncAttributeMaxDynamicSharedMemorySize, bytes);
    if (e != cudaSuccess) return e;
    configured = bytes;
  }
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
  const bool x_async = ((ldx & 7) == 0) && ((reinterpret_cast<uintptr_t>(x) & 15) == 0) && (K & 7) == 0;

  uint32_t s2[D][2];  // scales, in both halves of a 16-bit pair
  uint32_t z[D][2];
  auto issue = [&](int j, int i) {  // step i into slot j (one commit group per call, even past the end)
    if (i < nsteps) {
      const int kx = (kb0 + i * WK) * 128;
      uint16_t* xd = xr + (size_t)j * xslot;
      for (int p = threadIdx.x; p < M * WK * 16; p += 32 * NW) {
        const int row = p / (WK * 16), k8 = (p - row * (WK * 16)) * 8, k = kx + k8;
        if (x_async) {
          const bool in = k < K;
          cp_small<16>(xd + row * XROW + k8, x + (size_t)row * ldx + (in ? k : 0), in);
        } else {
          const uint16_t* src = x + (size_t)row * ldx + k;
          uint32_t h[8];
#pragma unroll
          for (int e = 0; e < 8; ++e) h[e] = k + e < K ? src[e] : 0u;
          *reinterpret_cast<uint4*>(xd + row * XROW + k8) =
              make_uint4(h[0] | (h[1] << 16), h[2] | (h[3] << 16), h[4] | (h[5] << 16), h[6] | (h[7] << 16));
        }
      }
      const int b = kb0 + i * WK + kw;
      if (b < kb1) {
        const size_t go = (size_t)(b / group_blocks) * N;
        s2[j][0] = scale2<BF16>(sc[go + n0]); s2[j][1] = scale2<BF16>(sc[go + n1]);
        z[j][0] = zb[go + n0]; z[j][1] = zb[go + n1];
#pragma unroll
        for (int q = 0; q < 2; ++q) {
          const int idx = lane + 32 * q, row = idx >> 2, quad = idx & 3;
          cp16_stream(my_ring + j * TL_STAGE + row * TL_ROW + quad * 4, tp + ((size_t)(b * 16 + row) * N >> 2) + quad);
        }
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
          uint32_t w[8];
#pragma unroll
          for (int r = 0; r < 4; ++r) {
            const int row = 2 * c + (r & 1) + 8 * (r >> 1);
            w[2 * r] = st[row * TL_ROW + g];
            w[2 * r + 1] = st[row * TL_ROW + g + 8];
          }
          uint32_t pr[2][2][2];
#pragma unroll
          for (int rp = 0; rp < 2; ++rp)
#pragma unroll
            for (int cc = 0; cc < 2; ++cc) {
              const uint32_t lo = w[2 * (2 * rp) + cc], hi = w[2 * (2 * rp + 1) + cc];
              pr[rp][cc][0] = __byte_perm(lo, hi, 0x5410);
              pr[rp][cc][1] = __byte_perm(lo, hi, 0x7632);
            }
          const uint32_t z0 = MAGIC2 + z[j][0] * 0x10001u, z1 = MAGIC2 + z[j][1] * 0x10001u;
          const uint32_t s0 = s2[j][0], s1 = s2[j][1];
#pragma unroll
          for (int stp = 0; stp < 8; ++stp) {
            const int sh = 4 * (stp & 3), half = stp >> 2;
            uint32_t a[4];  // (q - z) exact, times the scale: one rounding to 16 bits
            a[0] = mul2<BF16>(sub2<BF16>(lop3_codes<MAGIC2>(pr[0][0][half] >> sh), z0), s0);
            a[1] = mul2<BF16>(sub2<BF16>(lop3_codes<MAGIC2>(pr[0][1][half] >> sh), z1), s1);
            a[2] = mul2<BF16>(sub2<BF16>(lop3_codes<MAGIC2>(pr[1][0][half] >> sh), z0), s0);
            a[3] = mul2<BF16>(sub2<BF16>(lop3_codes<MAGIC2>(pr[1][1][half] >> sh), z1), s1);
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

#pragma unroll
  for (int mt = 0; mt < MT; ++mt) {
    float* rw = red + (size_t)(warp * 8 * MT + mt * 8 + 2 * c) * 16;
    rw[g] = acc[mt][0];
    rw[16 + g] = acc[mt][1];
    rw[g + 8] = acc[mt][2];
    rw[16 + g + 8] = acc[mt][3];
  }
  __syncthreads();
  // (8 MT rows) x (16 NT columns), 4 columns per thread: sum the WK K-parts of each n-tile
  const int col0 = blockIdx.x * NT * 16;
  for (int i = threadIdx.x; i < 8 * MT * 4 * NT; i += 32 * NW) {
    const int row = i / (4 * NT), cl = (i - row * 4 * NT) * 4, ntl = cl >> 4, cc = cl & 15;
    if (row < M) {
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
  }
  if (KS == 1) return;
  __threadfence();
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
    *p = 0.f;
    y[(size_t)row * ldy + col0 + cl] =
        BF16 ? __bfloat16_as_ushort(__float2bfloat16_rn(v)) : __half_as_ushort(__float2half_rn(v));
  }
  if (threadIdx.x == 0) cnt[blockIdx.x] = 0;
}

constexpr int SWAPX_D = 3;

template <bool BF16, int MT, int NT, int WK>
cudaError_t launch_swapx_one(cudaStream_t st, int ks, const uint16_t* x, const uint32_t* qt, const __half* sc,
                              const uint8_t* zb, uint16_t* y, float* ws, int* cnt, int M, int N, int K, int Kp,
                              int ldx, int ldy, int gb) {
  constexpr int D = SWAPX_D;
  const int x_bytes = D * M * (WK * 128 + 8) * 2, red_bytes = NT * WK * 8 * MT * 16 * 4;
  const int front = ((x_bytes > red_bytes ? x_bytes : red_bytes) + 15) & ~15;
  const int bytes = front + NT * WK * D * TL_STAGE * 4;
  static int configured = 0;
  if (bytes > 48 * 1024 && bytes > configured) {
    cudaError_t e = cudaFuncSetAttribute(w4a16_swapx_kernel<BF16, MT, NT, WK, D>,
                                         cudaFuncAttributeMaxDynamicSharedMemorySize, bytes);
    if (e != cudaSuccess) return e;
    configured = bytes;
  }
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

template <bool BF16>
__device__ __forceinline__ void wgmma_rs16(float* d, const uint32_t* a, uint64_t desc) {
#if ES_WGMMA
  if constexpr (BF16)
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %13, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n16k16.f32.bf16.bf16 {%0,%1,%2,%3,%4,%5,%6,%7}, {%8,%9,%10,%11}, %12, p, 1, 1, 0;\n}\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc), "r"(1));
  else
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %13, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n16k16.f32.f16.f16 {%0,%1,%2,%3,%4,%5,%6,%7}, {%8,%9,%10,%11}, %12, p, 1, 1, 0;\n}\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc), "r"(1));
#endif
}

template <bool BF16>
__device__ __forceinline__ void wgmma_rs32(float* d, const uint32_t* a, uint64_t desc) {
#if ES_WGMMA
  if constexpr (BF16)
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %21, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n32k16.f32.bf16.bf16 {%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15}, {%16,%17,%18,%19}, %20, p, 1, 1, 0;\n}\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),
                   "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc), "r"(1));
  else
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %21, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n32k16.f32.f16.f16 {%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15}, {%16,%17,%18,%19}, %20, p, 1, 1, 0;\n}\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),
                   "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc), "r"(1));
#endif
}

template <bool BF16>
__device__ __forceinline__ void wgmma_rs64(float* d, const uint32_t* a, uint64_t desc) {
#if ES_WGMMA
  if constexpr (BF16)
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %37, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 {%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,"
                 "%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31}, {%32,%33,%34,%35}, %36, p, 1, 1, 0;\n}\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),
                   "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]),
                   "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]),
                   "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc), "r"(1));
  else
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %37, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n64k16.f32.f16.f16 {%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,"
                 "%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31}, {%32,%33,%34,%35}, %36, p, 1, 1, 0;\n}\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),
                   "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]),
                   "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]),
                   "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc), "r"(1));
#endif
}

template <bool BF16, int MT>
__device__ __forceinline__ void wgmma_rs(float* d, const uint32_t* a, uint64_t desc) {
  if constexpr (MT == 2) wgmma_rs16<BF16>(d, a, desc);
  else if constexpr (MT == 4) wgmma_rs32<BF16>(d, a, desc);
  else wgmma_rs64<BF16>(d, a, desc);
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
  const bool x_async = ((ldx & 7) == 0) && ((reinterpret_cast<uintptr_t>(x) & 15) == 0) && (K & 7) == 0;

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
        const int row = p >> 4, q = p & 15, k = kx + q * 8;
        void* dst = xd + (row >> 3) * WG_XGROUP + q * WG_XCORE + (row & 7) * 16;
        if (x_async) {
          const bool in = k < K;
          cp_small<16>(dst, x + (size_t)row * ldx + (in ? k : 0), in);
        } else {
          const uint16_t* src = x + (size_t)row * ldx + k;
          uint32_t h[8];
#pragma unroll
          for (int e = 0; e < 8; ++e) h[e] = k + e < K ? src[e] : 0u;
          *reinterpret_cast<uint4*>(dst) =
              make_uint4(h[0] | (h[1] << 16), h[2] | (h[3] << 16), h[4] | (h[5] << 16), h[6] | (h[7] << 16));
        }
      }
      const size_t go = (size_t)(b / group_blocks) * N;
      s2[j][0] = scale2<BF16>(sc[go + n0]); s2[j][1] = scale2<BF16>(sc[go + n1]);
      z[j][0] = zb[go + n0]; z[j][1] = zb[go + n1];
#pragma unroll
      for (int q = 0; q < 2; ++q) {
        const int idx = lane + 32 * q, row = idx >> 2, quad = idx & 3;
        cp16_stream(my_ring + j * TL_STAGE + row * TL_ROW + quad * 4, tp + ((size_t)(b * 16 + row) * N >> 2) + quad);
      }
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
        uint32_t w[8];
#pragma unroll
        for (int r = 0; r < 4; ++r) {
          const int row = 2 * c + (r & 1) + 8 * (r >> 1);
          w[2 * r] = st[row * TL_ROW + g];
          w[2 * r + 1] = st[row * TL_ROW + g + 8];
        }
        uint32_t pr[2][2][2];
#pragma unroll
        for (int rp = 0; rp < 2; ++rp)
#pragma unroll
          for (int cc = 0; cc < 2; ++cc) {
            const uint32_t lo = w[2 * (2 * rp) + cc], hi = w[2 * (2 * rp + 1) + cc];
            pr[rp][cc][0] = __byte_perm(lo, hi, 0x5410);
            pr[rp][cc][1] = __byte_perm(lo, hi, 0x7632);
          }
        const uint32_t z0 = MAGIC2 + z[j][0] * 0x10001u, z1 = MAGIC2 + z[j][1] * 0x10001u;
        const uint32_t s0 = s2[j][0], s1 = s2[j][1];
        uint32_t a[8][4];
#pragma unroll
        for (int stp = 0; stp < 8; ++stp) {
          const int sh = 4 * (stp & 3), half = stp >> 2;
          a[stp][0] = mul2<BF16>(sub2<BF16>(lop3_codes<MAGIC2>(pr[0][0][half] >> sh), z0), s0);
          a[stp][1] = mul2<BF16>(sub2<BF16>(lop3_codes<MAGIC2>(pr[0][1][half] >> sh), z1), s1);
          a[stp][2] = mul2<BF16>(sub2<BF16>(lop3_codes<MAGIC2>(pr[1][0][half] >> sh), z0), s0);
          a[stp][3] = mul2<BF16>(sub2<BF16>(lop3_codes<MAGIC2>(pr[1][1][half] >> sh), z1), s1);
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

#pragma unroll
  for (int mt = 0; mt < MT; ++mt) {
    float* rw = red + (size_t)(warp * 8 * MT + mt * 8 + 2 * c) * 16;
    rw[g] = acc[4 * mt];
    rw[16 + g] = acc[4 * mt + 1];
    rw[g + 8] = acc[4 * mt + 2];
    rw[16 + g + 8] = acc[4 * mt + 3];
  }
  __syncthreads();
  const int col0 = blockIdx.x * NW * 16;
  for (int i = threadIdx.x; i < 8 * MT * 4 * NW; i += 128 * WG) {
    const int row = i / (4 * NW), cl = (i - row * 4 * NW) * 4, ntl = cl >> 4, cc = cl & 15;
    if (row < M) {
      const float* rr = red + (size_t)(ntl * 8 * MT + row) * 16 + cc;
      if (KS == 1) {
#pragma unroll
        for (int e = 0; e < 4; ++e)
          y[(size_t)row * ldy + col0 + cl + e] =
              BF16 ? __bfloat16_as_ushort(__float2bfloat16_rn(rr[e])) : __half_as_ushort(__float2half_rn(rr[e]));
      } else {
        atomicAdd(reinterpret_cast<float4*>(ws + (size_t)row * N + col0 + cl), make_float4(rr[0], rr[1], rr[2], rr[3]));
      }
    }
  }
  if (KS == 1) return;
  __threadfence();
  __syncthreads();
  __shared__ int last;
  if (threadIdx.x == 0) last = atomicAdd(cnt + blockIdx.x, 1) == KS - 1;
  __syncthreads();
  if (!last) return;
  __threadfence();
  for (int i = threadIdx.x; i < M * 16 * NW; i += 128 * WG) {
    const int row = i / (16 * NW), cl = i - row * 16 * NW;
    float* p = ws + (size_t)row * N + col0 + cl;
    const float v = __ldcg(p);
    *p = 0.f;
    y[(size_t)row * ldy + col0 + cl] =
        BF16 ? __bfloat16_as_ushort(__float2bfloat16_rn(v)) : __half_as_ushort(__float2half_rn(v));
  }
  if (threadIdx.x == 0) cnt[blockIdx.x] = 0;
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
  const int front = ((x_bytes > red_bytes ? x_bytes : red_bytes) + 127) & ~127;
  const int bytes = front + 4 * WG * D * TL_STAGE * 4;
  static int configured = 0;
  if (bytes > 48 * 1024 && bytes > configured) {
    cudaError_t e = cudaFuncSetAttribute(w4a16_wg_kernel<BF16, MT, WG, D>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                         bytes);
    if (e != cudaSuccess) return e;
    configured = bytes;
  }
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
  cudaStream_t st = reinterpret_cast<cudaStream_t>(stream);
  auto* xp = static_cast<const uint16_t*>(x);
  auto* qp = static_cast<const uint32_t*>(qt);
  auto* sp = static_cast<const __half*>(sc);
  auto* zp = static_cast<const uint8_t*>(zb);
  auto* yp = static_cast<uint16_t*>(y);
  auto* wp = static_cast<float*>(ws);
  auto* cp = static_cast<int*>(cnt);
  if (M <= 0) return 0;
  if (M > 64 || ks < 1) return (int)cudaErrorInvalidValue;
#define SW_ARGS nt, wk, ks, st, xp, qp, sp, zp, yp, wp, cp, M, N, K, Kp, ldx, ldy, group_blocks
  if (bf16) {
    if (M <= 8) return (int)launch_swap_mt<true, 1>(SW_ARGS);
    if (M <= 16) return (int)launch_swap_mt<true, 2>(SW_ARGS);
    if (M <= 32) return (int)launch_swap_mt<true, 4>(SW_ARGS);
    return (int)launch_swap_mt<true, 8>(SW_ARGS);
  }
  if (M <= 8) return (int)launch_swap_mt<false, 1>(SW_ARGS);
  if (M <= 16) return (int)launch_swap_mt<false, 2>(SW_ARGS);
  if (M <= 32) return (int)launch_swap_mt<false, 4>(SW_ARGS);
  return (int)launch_swap_mt<false, 8>(SW_ARGS);
#undef SW_ARGS
}

// The streamed-x variant (w4a16_swapx_kernel), 8 < M <= 64, same operands and contract as above;
// (nt, wk) in launch_swapx_mt.
extern "C" int edgeserve_w4a16_swapx(const void* x, const void* qt, const void* sc, const void* zb, void* y, void* ws,
                                      void* cnt, int M, int N, int K, int Kp, int ldx, int ldy, int group_blocks,
                                      int bf16, int nt, int wk, int ks, void* stream) {
  cudaStream_t st = reinterpret_cast<cudaStream_t>(stream);
  auto* xp = static_cast<const uint16_t*>(x);
  auto* qp = static_cast<const uint32_t*>(qt);
  auto* sp = static_cast<const __half*>(sc);
  auto* zp = static_cast<const uint8_t*>(zb);
  auto* yp = static_cast<uint16_t*>(y);
  auto* wp = static_cast<float*>(ws);
  auto* cp = static_cast<int*>(cnt);
  if (M <= 0) return 0;
  if (M <= 8 || M > 64 || ks < 1) return (int)cudaErrorInvalidValue;
#define SX_ARGS nt, wk, ks, st, xp, qp, sp, zp, yp, wp, cp, M, N, K, Kp, ldx, ldy, group_blocks
  if (bf16) {
    if (M <= 16) return (int)launch_swapx_mt<true, 2>(SX_ARGS);
    if (M <= 32) return (int)launch_swapx_mt<true, 4>(SX_ARGS);
    return (int)launch_swapx_mt<true, 8>(SX_ARGS);
  }
  if (M <= 16) return (int)launch_swapx_mt<false, 2>(SX_ARGS);
  if (M <= 32) return (int)launch_swapx_mt<false, 4>(SX_ARGS);
  return (int)launch_swapx_mt<false, 8>(SX_ARGS);
#undef SX_ARGS
}

// The Hopper warpgroup-MMA variant (w4a16_wg_kernel), 8 < M <= 64, sm_90a only; wg warpgroups
// (64 columns each) per CTA, ks K slices. Same operands and contract as above.
extern "C" int edgeserve_w4a16_wg(const void* x, const void* qt, const void* sc, const void* zb, void* y, void* ws,
                                   void* cnt, int M, int N, int K, int Kp, int ldx, int ldy, int group_blocks,
                                   int bf16, int wg, int ks, void* stream) {
  cudaStream_t st = reinterpret_cast<cudaStream_t>(stream);
  auto* xp = static_cast<const uint16_t*>(x);
  auto* qp = static_cast<const uint32_t*>(qt);
  auto* sp = static_cast<const __half*>(sc);
  auto* zp = static_cast<const uint8_t*>(zb);
  auto* yp = static_cast<uint16_t*>(y);
  auto* wp = static_cast<float*>(ws);
  auto* cp = static_cast<int*>(cnt);
  if (M <= 0) return 0;
  if (M <= 8 || M > 64 || ks < 1) return (int)cudaErrorInvalidValue;
#define WG_ARGS wg, ks, st, xp, qp, sp, zp, yp, wp, cp, M, N, K, Kp, ldx, ldy, group_blocks
  if (bf16) {
    if (M <= 16) return (int)launch_wg_mt<true, 2>(WG_ARGS);
    if (M <= 32) return (int)launch_wg_mt<true, 4>(WG_ARGS);
    return (int)launch_wg_mt<true, 8>(WG_ARGS);
  }
  if (M <= 16) return (int)launch_wg_mt<false, 2>(WG_ARGS);
  if (M <= 32) return (int)launch_wg_mt<false, 4>(WG_ARGS);
  return (int)launch_wg_mt<false, 8>(WG_ARGS);
#undef WG_ARGS
}
