#!/usr/bin/env python3
"""merkle_ref.py - an independent BEP 52 pieces-root, written from the BEP's text with
hashlib only: SHA-256 of each 16 KiB block (the last one short, not padded with data), the
leaf layer padded with zero hashes to a power of two, pairs hashed up to the root; the piece
layer is the layer whose nodes cover piece_len bytes (none for a file of at most one piece).
An empty file: 32 zero bytes (meshllm's convention; BEP 52 gives it no root).

usage: merkle_ref.py FILE [PIECE_LEN]  -> "ROOT_HEX SHA256_HEX N_PIECES PIECE_LAYER_SHA256"
       merkle_ref.py --pattern SIZE    -> the same for bytes (i * 7 + i // 251) % 256
"""
import hashlib
import sys

BLOCK = 16384


def tree(data, piece_len=1 << 20):
    if not data:
        return bytes(32), b""
    leaves = [hashlib.sha256(data[i:i + BLOCK]).digest() for i in range(0, len(data), BLOCK)]
    width = 1
    while width < len(leaves):
        width *= 2
    layer = leaves + [bytes(32)] * (width - len(leaves))
    per_piece = piece_len // BLOCK
    piece_layer = b""
    covered = 1
    while len(layer) > 1:
        if covered == per_piece and len(data) > piece_len:
            n_pieces = (len(data) + piece_len - 1) // piece_len
            piece_layer = b"".join(layer[:n_pieces])
        layer = [hashlib.sha256(layer[i] + layer[i + 1]).digest() for i in range(0, len(layer), 2)]
        covered *= 2
    if covered == per_piece and len(data) > piece_len:
        piece_layer = layer[0]
    return layer[0], piece_layer


def main():
    if sys.argv[1] == "--pattern":
        n = int(sys.argv[2])
        data = bytes((i * 7 + i // 251) % 256 for i in range(n))
        piece_len = 1 << 20
    else:
        data = open(sys.argv[1], "rb").read()
        piece_len = int(sys.argv[2]) if len(sys.argv) > 2 else 1 << 20
    root, pieces = tree(data, piece_len)
    print(root.hex(), hashlib.sha256(data).hexdigest(), len(pieces) // 32,
          hashlib.sha256(pieces).hexdigest())


main()
