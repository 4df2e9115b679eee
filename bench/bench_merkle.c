/* bench_merkle.c - the cost of verification alone (node/merkle.h), on a file in the page
 * cache: the whole tree (content ID, piece layer, SHA-256) as `meshllm pull` and the store
 * compute it, and the per-piece check a mesh pull makes (merkle_piece_verify of every
 * 1 MiB piece against its piece-layer hash). Prints MiB/s of each (median of --runs).
 *
 *   bench_merkle FILE [--runs N]
 */
#include "node/merkle.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
    if (argc < 2 || !strcmp(argv[1], "-h") || !strcmp(argv[1], "--help")) {
        fprintf(argc < 2 ? stderr : stdout, "usage: bench_merkle FILE [--runs N]\n");
        return argc < 2 ? 2 : 0;
    }
    int runs = argc > 3 && !strcmp(argv[2], "--runs") ? atoi(argv[3]) : 3;
    if (runs < 1 || runs > 99) runs = 3;
    int fd = open(argv[1], O_RDONLY);
    struct stat sb;
    if (fd < 0 || fstat(fd, &sb) || sb.st_size == 0) {
        fprintf(stderr, "bench_merkle: cannot open %s\n", argv[1]);
        return 1;
    }
    size_t size = (size_t)sb.st_size;
    const uint8_t *p = mmap(NULL, size, PROT_READ, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) return 1;
    double tree[99], verify[99], mib = (double)size / (1 << 20);
    uint8_t *pieces = NULL;
    size_t n_pieces = 0;
    for (int r = 0; r < runs; r++) {
        struct merkle mk;
        uint8_t root[32], sha[32];
        free(pieces);
        double t0 = now_s();
        if (merkle_init(&mk, MERKLE_PIECE_DEFAULT) || merkle_update(&mk, p, size) ||
            merkle_final(&mk, root, sha, &pieces, &n_pieces))
            return 1;
        tree[r] = mib / (now_s() - t0);
        t0 = now_s();
        size_t bad = 0;
        for (size_t i = 0; i < n_pieces; i++) {
            size_t off = i * MERKLE_PIECE_DEFAULT;
            size_t len = size - off < MERKLE_PIECE_DEFAULT ? size - off : MERKLE_PIECE_DEFAULT;
            bad += !merkle_piece_verify(p + off, len, MERKLE_PIECE_DEFAULT, pieces + i * 32);
        }
        verify[r] = mib / (now_s() - t0);
        if (bad) {
            fprintf(stderr, "bench_merkle: %zu pieces did not verify\n", bad);
            return 1;
        }
    }
    qsort(tree, (size_t)runs, sizeof *tree, cmp_d);
    qsort(verify, (size_t)runs, sizeof *verify, cmp_d);
    printf("file %.1f MiB, %zu pieces of 1 MiB, %d runs\n", mib, n_pieces, runs);
    printf("whole tree (content ID + piece layer + SHA-256): %.0f MiB/s (median)\n",
           tree[runs / 2]);
    printf("piece verification (merkle_piece_verify):       %.0f MiB/s (median)\n",
           verify[runs / 2]);
    free(pieces);
    munmap((void *)p, size);
    close(fd);
    return 0;
}
