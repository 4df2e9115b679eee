/* sysmem.h - what this machine offers a model: free memory and a measured memory speed.
 *
 * Decode reads every weight once per token, so a node's speed at running layers is about
 * its memory bandwidth; sysmem_speed_gbps measures it once (a ~32 MiB read, a few ms) and
 * keeps the result. Both read an override from the environment first, for tests and for
 * users who want to offer less than the machine has. Not here: per-model measurements
 * (the scheduler's gen_tps).
 * Thread rule: any thread.
 */
#ifndef MESH_CORE_SYSMEM_H
#define MESH_CORE_SYSMEM_H

#include <stdint.h>

/* Bytes of memory available now: $MESHLLM_MEM_FREE_BYTES when set (a number of bytes, or
 * with a K/M/G suffix), else the free physical pages plus reclaimable page cache as
 * /proc/meminfo's MemAvailable says (free pages when that cannot be read). */
uint64_t sysmem_free_bytes(void);
/* Memory read speed in GB/s: $MESHLLM_SPEED when set, else measured at the first call. */
double sysmem_speed_gbps(void);

#endif
