/* varint.h - multiformats unsigned varints (multiformats/unsigned-varint): 7 bits per byte,
 * least significant group first, high bit = more. At most 9 bytes (63 bits); encodings must
 * be minimal. Used by multiaddr, multistream-select and length-prefixed protobuf framing.
 * Pure functions; any thread.
 */
#ifndef MESH_NET_VARINT_H
#define MESH_NET_VARINT_H

#include <stddef.h>
#include <stdint.h>

#define VARINT_MAX_LEN 9

/* Writes v (< 2^63) into out (VARINT_MAX_LEN bytes of room) and returns the bytes used. */
size_t varint_encode(uint64_t v, uint8_t *out);

/* Reads a varint from b[0..len). On success returns 0 and sets *v and *used.
 * MESH_EAGAIN: b ends inside the varint (need more bytes); MESH_EPROTO: too long or not
 * minimal. */
int varint_decode(const uint8_t *b, size_t len, uint64_t *v, size_t *used);

#endif
