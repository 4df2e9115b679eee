/* blob.h - /meshllm/blob/1: model store files between admitted members (docs/PROTOCOL.md).
 * Phase 2 of issue 13. Done: the wire format (node/blob_internal.h, blob_wire.c) and its
 * fuzz target. Not yet: the provider (serving the store on the p2p node), the multi-peer
 * pull (node/blobpull.c) and provider announcements.
 */
#ifndef MESH_NODE_BLOB_H
#define MESH_NODE_BLOB_H

#define BLOB_PROTOCOL_ID "/meshllm/blob/1"
#define BLOB_VERSION 1

#endif
