/* test_util.h - helpers shared by the test programs (not part of the library). */
#ifndef MESH_TESTS_TEST_UTIL_H
#define MESH_TESTS_TEST_UTIL_H

#include <stddef.h>
#include <stdint.h>

/* Folder of the shared test models: $MESHLLM_TEST_MODELS, else ../shared/models next to
 * the repository root (tests run from the root). */
const char *test_models_dir(void);
/* Joins test_models_dir() and rel into a static buffer (one call at a time). */
const char *test_model_path(const char *rel);
/* Reads a whole file into a malloc'd buffer (+1 NUL byte not counted in *len). NULL on error. */
char *test_read_file(const char *path, size_t *len);
/* Temporary directory for this test process (created once, removed by the OS / run.sh). */
const char *test_tmp_dir(void);
/* Deterministic random numbers for tests (splitmix64). */
uint64_t test_rand_u64(uint64_t *state);
float test_rand_uniform(uint64_t *state); /* [-1, 1) */

/* Decodes hex (two digits a byte) into out[cap]; returns the byte count, or SIZE_MAX when
 * hex is not whole bytes of hex digits or does not fit. */
size_t test_hex_decode(const char *hex, uint8_t *out, size_t cap);

#endif
