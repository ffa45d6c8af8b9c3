/* The CPU's float32 fused multiply-add peak, measured: the reference that
 * jflow.benchmark.matmul_peak_gflops (XLA's own matrix product) is compared with.
 *
 *   gcc -O2 -march=native -fopenmp experiments/fma_peak.c -o /tmp/fma_peak
 *   OMP_NUM_THREADS=2 taskset -c 0,1 /tmp/fma_peak
 *
 * Each thread runs CHAINS independent chains of vector FMAs (enough to hide the FMA latency on
 * every unit), so the loop is bound by FMA throughput; prints GFLOP/s (2 per multiply-add) over
 * all threads. Uses 512-bit vectors where the compiler targets AVX-512, else 256-bit (AVX2+FMA). */
#include <immintrin.h>
#include <omp.h>
#include <stdio.h>

#define CHAINS 12
#ifdef __AVX512F__
typedef __m512 vec;
#define LANES 16
#define SET1 _mm512_set1_ps
#define FMA _mm512_fmadd_ps
#define ADD _mm512_add_ps
#define SUM _mm512_reduce_add_ps
#else
typedef __m256 vec;
#define LANES 8
#define SET1 _mm256_set1_ps
#define FMA _mm256_fmadd_ps
#define ADD _mm256_add_ps
static float SUM(vec v) { float t[8]; _mm256_storeu_ps(t, v); return t[0] + t[1] + t[2] + t[3] + t[4] + t[5] + t[6] + t[7]; }
#endif

int main(void) {
  const long steps = 50000000L;
  int threads = 1;
  double checksum = 0.0;
  double t0 = omp_get_wtime();
#pragma omp parallel reduction(+ : checksum)
  {
#pragma omp single
    threads = omp_get_num_threads();
    vec acc[CHAINS];
    volatile float start = 1.0f; /* distinct, opaque starts: no chain can be merged */
    for (int c = 0; c < CHAINS; c++) acc[c] = SET1(start + (float)c);
    const vec mul = SET1(0.999999f), add = SET1(1e-7f);
    for (long i = 0; i < steps; i++) {
#pragma GCC unroll 12
      for (int c = 0; c < CHAINS; c++) acc[c] = FMA(acc[c], mul, add);
    }
    vec total = acc[0];
    for (int c = 1; c < CHAINS; c++) total = ADD(total, acc[c]);
    checksum += SUM(total);
  }
  double seconds = omp_get_wtime() - t0;
  double flop = 2.0 * LANES * CHAINS * (double)steps * threads;
  printf("%d threads, %d-bit FMA: %.1f GFLOP/s (checksum %g)\n", threads, LANES * 32,
         flop / seconds / 1e9, checksum);
  return 0;
}
