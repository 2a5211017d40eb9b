#!/usr/bin/env python3
"""Decrypts an encrypted d1r2 backup without d1r2: one part or chunk (gunzipped when it is
gzip'd), or with --manifest the manifest, checked and printed whole as JSON.

Usage: D1R2_ENCRYPTION_KEY=... python3 scripts/decrypt_part.py PART [OUT]
       D1R2_ENCRYPTION_KEY=... python3 scripts/decrypt_part.py PREFIX/chunks/aa/ADDRESS.sql.gz [OUT]
       D1R2_ENCRYPTION_KEY=... python3 scripts/decrypt_part.py --manifest BACKUP/manifest.json
Writes to OUT, or to stdout. Needs the `cryptography` package (pip install cryptography).
The format is described in docs/format.md ("Encryption"). A part of a format 3 backup is bound to its
backup and key: the script finds the backup's manifest.json above the part, checks it, and
refuses a part that is not the one the manifest names there. A chunk of a chunked backup
(format 4) is bound to its address, its file name: it opens under that address only, and its SQL
must hash to it. Every record is authenticated before its plaintext is written; a part cut short,
reordered, extended or moved is refused.
"""
import base64
import binascii
import hashlib
import hmac
import re
import json
import os
import struct
import sys
import zlib

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

MAGIC = b"D1R2ENC\0"
HEADER_LEN = 20
TAG_LEN = 16
# The public fields of a format 3 manifest; everything else is sealed.
PUBLIC = {"format", "tool", "id", "created", "label", "source", "bytes", "encryption", "sealed", "chunks"}


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


def subkey(key, info):
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(key)


def fingerprint(key):
    return hashlib.sha256(b"d1r2 key fingerprint" + key).hexdigest()[:16]


def open_manifest(path, key):
    """The whole manifest of the backup whose manifest.json is at `path`, after every check."""
    with open(path, "rb") as f:
        stored = json.load(f)
    folder = os.path.basename(os.path.dirname(os.path.abspath(path)))
    if stored.get("id") != folder:
        sys.exit(f"the manifest in folder {folder} names backup {stored.get('id')}")
    if stored.get("format", 0) < 3:
        return stored
    extra = set(stored) - PUBLIC
    if extra:
        sys.exit(f"the manifest of backup {folder} has unknown public fields {sorted(extra)}")
    if stored.get("encryption", {}).get("key_fingerprint") != fingerprint(key):
        sys.exit(f"backup {folder} was encrypted with another key")
    sealed = base64.b64decode(stored["sealed"])
    nonce, body = sealed[:12], sealed[12:]
    try:
        whole = json.loads(AESGCM(subkey(key, b"d1r2 manifest v1")).decrypt(nonce, body, b""))
    except InvalidTag:
        sys.exit(f"the manifest of backup {folder} fails authentication: it was altered")
    implied = {
        "format": whole["format"],
        "tool": whole["tool"],
        "id": whole["id"],
        "created": whole["created"],
        "source": {"kind": whole["source"]["kind"]},
        "bytes": sum(o["bytes"] for o in whole["objects"]),
        "encryption": whole["encryption"],
        "sealed": stored["sealed"],
    }
    if whole.get("public_label") and whole.get("label") is not None:
        implied["label"] = whole["label"]
    addresses = sorted({o["chunk"] for o in whole["objects"] if o.get("chunk")})
    if addresses:
        implied["chunks"] = addresses
    if implied != stored:
        sys.exit(f"the manifest of backup {folder} was altered: its public fields differ from the sealed ones")
    return whole


def place(backup_id, object_key):
    return b"".join(struct.pack(">I", len(t)) + t for t in (backup_id.encode(), object_key.encode()))


def part_binding(part_path, key):
    """(cipher key, place) for a part: found through the manifest above it for a version 2 part."""
    folder = os.path.dirname(os.path.abspath(part_path))
    while not os.path.exists(os.path.join(folder, "manifest.json")):
        parent = os.path.dirname(folder)
        if parent == folder:
            sys.exit("a format 3 part is read with its backup's manifest.json, which is not above it")
        folder = parent
    manifest = open_manifest(os.path.join(folder, "manifest.json"), key)
    object_key = os.path.relpath(os.path.abspath(part_path), folder).replace(os.sep, "/")
    entry = next((o for o in manifest["objects"] if o["key"] == object_key), None)
    if entry is None:
        sys.exit(f"backup {manifest['id']} has no part {object_key}")
    with open(part_path, "rb") as f:
        if hashlib.sha256(f.read()).hexdigest() != entry["sha256"]:
            sys.exit(f"part {object_key} does not match its SHA-256 in the manifest")
    return subkey(key, b"d1r2 part v2"), place(manifest["id"], object_key)


# A chunk's place in a store: chunks/<first two hex of its address>/<address>.sql[.gz].
CHUNK_PATH = re.compile(r"(?:^|/)chunks/([0-9a-f]{2})/(\1[0-9a-f]{62})\.sql(?:\.gz)?$")


def chunk_address(path):
    """The address a chunk's path names, or None when the path is not a chunk's."""
    found = CHUNK_PATH.search(os.path.abspath(path).replace(os.sep, "/"))
    return found.group(2) if found else None


def chunk_binding(address, key):
    return subkey(key, b"d1r2 chunk v1"), place("chunk", address)


def chunks(stream, key, part_path):
    """Yields the plaintext of each record, in order, after checking it."""
    header = stream.read(HEADER_LEN)
    if header[:8] != MAGIC:
        sys.exit("not an encrypted d1r2 part (bad magic)")
    if len(header) < HEADER_LEN:
        sys.exit("encrypted part is truncated")
    if header[8] == 1:
        cipher_key, aad = key, header
    elif header[8] == 2:
        address = chunk_address(part_path)
        if address:
            cipher_key, bound = chunk_binding(address, key)
        else:
            cipher_key, bound = part_binding(part_path, key)
        aad = header + bound
    else:
        sys.exit(f"unsupported encryption format version {header[8]}")
    (chunk_size,) = struct.unpack(">I", header[9:13])
    prefix = header[13:20]
    aead = AESGCM(cipher_key)
    record = stream.read(chunk_size + TAG_LEN)
    index = 0
    while True:
        nxt = stream.read(chunk_size + TAG_LEN)
        last = not nxt
        nonce = prefix + struct.pack(">I", index) + (b"\x01" if last else b"\x00")
        try:
            yield aead.decrypt(nonce, record, aad)
        except InvalidTag:
            sys.exit("wrong key or corrupted part (or cut short, reordered, extended or moved)")
        if last:
            return
        record, index = nxt, index + 1


def main():
    args = sys.argv[1:]
    key = parse_key(os.environ.get("D1R2_ENCRYPTION_KEY", ""))
    if len(args) == 2 and args[0] == "--manifest":
        json.dump(open_manifest(args[1], key), sys.stdout, indent=2)
        sys.stdout.write("\n")
        return
    if len(args) not in (1, 2):
        sys.exit(__doc__)
    address = chunk_address(args[0])
    # A chunk's SQL is checked against its address before any of it is written out.
    held = [] if address else None
    out = open(args[1], "wb") if len(args) == 2 else sys.stdout.buffer
    write = held.append if held is not None else out.write
    gunzip = None
    with open(args[0], "rb") as stream:
        for plain in chunks(stream, key, args[0]):
            if gunzip is None:
                gzipped = args[0].endswith(".gz") or plain[:2] == b"\x1f\x8b"
                gunzip = zlib.decompressobj(wbits=31) if gzipped else False
            if not gunzip:
                write(plain)
                continue
            # A part is several gzip members back to back (one a page): each one that ends
            # hands what follows it to a fresh decompressor.
            while plain:
                write(gunzip.decompress(plain))
                plain = gunzip.unused_data if gunzip.eof else b""
                if plain:
                    gunzip = zlib.decompressobj(wbits=31)
        if gunzip:
            write(gunzip.flush())
            if not gunzip.eof:
                sys.exit("the gzip stream inside the part is incomplete")
    if held is not None:
        sql = b"".join(held)
        mac = hmac.new(subkey(key, b"d1r2 chunk address v1"), sql, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(mac, address):
            sys.exit(f"chunk {address} does not hash to its address: it was altered or misnamed")
        out.write(sql)
    out.flush()


if __name__ == "__main__":
    main()
