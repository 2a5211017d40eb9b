#!/usr/bin/env python3
"""Decrypts one encrypted d1r2 backup part without d1r2, and gunzips it when it is gzip'd.

Usage: D1R2_ENCRYPTION_KEY=... python3 scripts/decrypt_part.py PART [OUT]
Writes the SQL to OUT, or to stdout. Needs the `cryptography` package (pip install cryptography).
The format is described in docs/format.md ("Encryption"); every chunk is authenticated before its
plaintext is written, and a part that is cut short, reordered or extended is refused.
"""
import base64
import binascii
import os
import struct
import sys
import zlib

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

MAGIC = b"D1R2ENC\0"
HEADER_LEN = 20
TAG_LEN = 16


def parse_key(text):
    text = text.strip()
    try:
        if len(text) == 64:
            key = bytes.fromhex(text)
        else:
            key = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (ValueError, binascii.Error):
        key = b""
    if len(key) != 32:
        sys.exit("D1R2_ENCRYPTION_KEY must be 32 bytes written as 64 hex characters or as base64")
    return key


def chunks(stream, key):
    """Yields the plaintext of each chunk, in order, after checking it."""
    header = stream.read(HEADER_LEN)
    if header[:8] != MAGIC:
        sys.exit("not an encrypted d1r2 part (bad magic)")
    if len(header) < HEADER_LEN:
        sys.exit("encrypted part is truncated")
    if header[8] != 1:
        sys.exit(f"unsupported encryption format version {header[8]}")
    (chunk_size,) = struct.unpack(">I", header[9:13])
    prefix = header[13:20]
    aead = AESGCM(key)
    record = stream.read(chunk_size + TAG_LEN)
    index = 0
    while True:
        nxt = stream.read(chunk_size + TAG_LEN)
        last = not nxt
        nonce = prefix + struct.pack(">I", index) + (b"\x01" if last else b"\x00")
        try:
            yield aead.decrypt(nonce, record, header)
        except InvalidTag:
            sys.exit("wrong key or corrupted part (or cut short, reordered or extended)")
        if last:
            return
        record, index = nxt, index + 1


def main():
    if len(sys.argv) not in (2, 3):
        sys.exit(__doc__)
    key = parse_key(os.environ.get("D1R2_ENCRYPTION_KEY", ""))
    out = open(sys.argv[2], "wb") if len(sys.argv) == 3 else sys.stdout.buffer
    gunzip = None
    with open(sys.argv[1], "rb") as stream:
        for plain in chunks(stream, key):
            if gunzip is None:
                gzipped = sys.argv[1].endswith(".gz") or plain[:2] == b"\x1f\x8b"
                gunzip = zlib.decompressobj(wbits=31) if gzipped else False
            if not gunzip:
                out.write(plain)
                continue
            # A part is several gzip members back to back (one a page): each one that ends
            # hands what follows it to a fresh decompressor.
            while plain:
                out.write(gunzip.decompress(plain))
                plain = gunzip.unused_data if gunzip.eof else b""
                if plain:
                    gunzip = zlib.decompressobj(wbits=31)
        if gunzip:
            out.write(gunzip.flush())
            if not gunzip.eof:
                sys.exit("the gzip stream inside the part is incomplete")
    out.flush()


if __name__ == "__main__":
    main()
