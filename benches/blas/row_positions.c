/* Whether a CBLAS sgemm computes a row with the same bits at every row position of a call, as the
 * tiled GEMM of finercut-tensor needs for batch invariance (docs/ARCHITECTURE.md). For each of
 * the shapes below it places one row of A at each position of a 64-row row-major product (the
 * other rows random), with B as `k×n` and as `n×k`, and prints one digit per position: 0 where
 * the row's output has the bits it has at position 0, 1 where it differs.
 *
 *   gcc -O1 benches/blas/row_positions.c -o /tmp/row_positions -lopenblas
 *   for c in Haswell Zen SkylakeX Cooperlake SapphireRapids SandyBridge Nehalem Core2 Atom \
 *            Barcelona Prescott; do echo "$c"; OPENBLAS_CORETYPE=$c OPENBLAS_NUM_THREADS=1 \
 *     /tmp/row_positions; done
 */
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define M 64

static float uniform(void) { return (float)rand() / (float)RAND_MAX * 2.0f - 1.0f; }

int main(void) {
  static const int shapes[][2] = {{16, 8}, {17, 64}, {100, 300}, {512, 576}};
  int any = 0;
  for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
    for (int nxk = 0; nxk < 2; nxk++) {
      int n = shapes[s][0], k = shapes[s][1];
      float *row = malloc(sizeof(float) * k), *b = malloc(sizeof(float) * k * n);
      float *a = malloc(sizeof(float) * M * k), *c = malloc(sizeof(float) * M * n);
      float *first = malloc(sizeof(float) * n);
      if (!row || !b || !a || !c || !first) return 2;
      srand(1);
      for (int i = 0; i < k; i++) row[i] = uniform();
      for (int i = 0; i < k * n; i++) b[i] = uniform();
      char marks[M + 1] = {0};
      int differ = 0;
      for (int p = 0; p < M; p++) {
        for (int i = 0; i < M * k; i++) a[i] = uniform();
        memcpy(a + p * k, row, sizeof(float) * k);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, nxk ? CblasTrans : CblasNoTrans, M, n, k, 1.0f,
                    a, k, b, nxk ? k : n, 0.0f, c, n);
        if (p == 0) memcpy(first, c, sizeof(float) * n);
        int d = memcmp(first, c + p * n, sizeof(float) * n) != 0;
        marks[p] = d ? '1' : '0';
        differ += d;
      }
      printf("n=%-4d k=%-4d B %s: %2d of %d positions differ  %s\n", n, k, nxk ? "n×k" : "k×n",
             differ, M, marks);
      any |= differ > 0;
      free(row); free(b); free(a); free(c); free(first);
    }
  }
  return any;
}
