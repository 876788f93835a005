#!/usr/bin/env python3
"""Independent writer of fwpack container images, format version 2.

Written from docs/FORMAT.md alone, so that the Rust reader can be shown
images it did not write. Standard library only, plus `openssl` (Ed25519
signing) and `zstd` (only for compress=zstd segments).

    fwi_write.py --board B --version N [--label L] [--chunk-shift 16..20]
                 [--slots N] [--key KEY.pem ...] [--zero-chunks]   (created: $SOURCE_DATE_EPOCH)
                 -s NAME=FILE[,target=T][,offset=BYTES][,compress=none|gzip|zstd] ...
                 -o OUT.fwi
"""
import argparse
import gzip
import hashlib
import os
import struct
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fwi_verify import crc32c, ceil_div  # noqa: E402  (the CRC code is not the point)


def run(args, **kw):
    r = subprocess.run(args, capture_output=True, **kw)
    if r.returncode:
        sys.exit(f"fwi_write: {args[0]} failed: {r.stderr.decode(errors='replace')}")
    return r.stdout


def compress(raw, comp):
    if comp == 0:
        return raw
    if comp == 1:
        return gzip.compress(raw, 9, mtime=0)
    with tempfile.NamedTemporaryFile() as t:  # a file, so zstd knows the content size
        t.write(raw)
        t.flush()
        return run(["zstd", "-q", "-c", "-3", t.name])


def padded(s, n):
    b = s.encode()
    if len(b) > n:
        sys.exit(f"fwi_write: {s!r} longer than {n} bytes")
    return b + bytes(n - len(b))


def build(segments, board, version, label="", chunk_shift=18, slots=2, created=0, keys=(),
          compat=0, encode=compress, zero_chunks=False, incompat_xor=0):
    """The image bytes. segments: dicts name, target, raw, comp (0/1/2), toff[, gap].
    encode(raw_chunk, comp) gives a chunk's stored bytes (tests pass broken ones).
    zero_chunks: an all-zero chunk of a compressed segment is stored empty
    (FORMAT.md "Zero chunks", incompat bit 2, set when one is).
    incompat_xor: flips header incompat bits after they were chosen (tests)."""
    chunk_size = 1 << chunk_shift
    segs = []
    for s in segments:
        chunks = []
        for i in range(0, len(s["raw"]), chunk_size):
            r = s["raw"][i:i + chunk_size]
            st = b"" if zero_chunks and s["comp"] and not any(r) else encode(r, s["comp"])
            chunks.append((st, hashlib.sha256(st).digest(), hashlib.sha256(r).digest()))
        segs.append(dict(s, chunks=chunks))

    chunk_count = sum(len(s["chunks"]) for s in segs)
    crc_count = sum(ceil_div(len(s["raw"]), 4096) for s in segs)
    chunk_pages = ceil_div(chunk_count, 51)
    page_count = chunk_pages + ceil_div(crc_count, 1024)
    sig_offset = 256 + 160 * len(segs) + 32 * page_count
    index_offset = ceil_div(sig_offset + 128 * slots, 4096) * 4096
    data_offset = index_offset + 4096 * page_count

    # Lay out the data: segments in table order, each at a 4096 boundary.
    pos, data, entries, crcs, crc = data_offset, bytearray(), [], [], 0
    table = b""
    first_crc = first_chunk = 0
    for n, s in enumerate(segs):
        pad = -pos % 4096 + s.get("gap", 0)  # gap: extra zero bytes (tests)
        data += bytes(pad)
        pos += pad
        doff = pos
        for stored, ssha, rsha in s["chunks"]:
            entries.append(ssha + rsha + struct.pack("<QII", pos, len(stored), 0))
            data += stored
            pos += len(stored)
        for j in range(0, len(s["raw"]), 4096):
            crc = crc32c(s["raw"][j:j + 4096], crc)
            crcs.append(crc)
        blocks = ceil_div(len(s["raw"]), 4096)
        table += (padded(s["name"], 32) + padded(s["target"], 32)
                  + struct.pack("<QQQQIIB3xIII", doff, pos - doff, len(s["raw"]), s["toff"],
                                first_crc, blocks, s["comp"], 0, first_chunk, len(s["chunks"]))
                  + bytes(40))
        first_crc += blocks
        first_chunk += len(s["chunks"])
    image_len = pos

    index = b""
    for q in range(chunk_pages):
        page = b"".join(entries[51 * q:51 * q + 51])
        index += page + bytes(4096 - len(page))
    crc_b = struct.pack(f"<{crc_count}I", *crcs)
    index += crc_b + bytes(-len(crc_b) % 4096)
    page_hashes = b"".join(hashlib.sha256(index[i:i + 4096]).digest()
                           for i in range(0, len(index), 4096))

    incompat = 1 if any(s["comp"] for s in segs) else 0
    if any(len(c[0]) == 0 for s in segs for c in s["chunks"]):
        incompat |= 4
    incompat ^= incompat_xor
    h = (b"FWPKIMG\0" + struct.pack("<HHIIBBBBQQIIB3xIQQQQQQ", 2, 256, compat, incompat, 1, 1, 1,
                                    12, version, created, len(segs), 160, chunk_shift,
                                    slots, chunk_count, crc_count, index_offset, page_count,
                                    data_offset, image_len)
         + padded(board, 64) + padded(label, 64) + bytes(20))
    h += struct.pack("<I", crc32c(h))
    head = h + table + page_hashes
    assert len(head) == sig_offset

    msg = b"FWPKSIG2" + hashlib.sha256(head).digest()
    slot_b = b""
    with tempfile.TemporaryDirectory() as d:
        m = os.path.join(d, "msg")
        open(m, "wb").write(msg)
        for key in keys:
            der = run(["openssl", "pkey", "-in", key, "-pubout", "-outform", "DER"])
            sig = run(["openssl", "pkeyutl", "-sign", "-inkey", key, "-rawin", "-in", m])
            assert len(sig) == 64
            slot_b += b"\x01" + bytes(7) + hashlib.sha256(der[-32:]).digest() + sig + bytes(24)
    if len(keys) > slots:
        sys.exit("fwi_write: more keys than --slots")
    slot_b += bytes(128 * slots - len(slot_b))

    out = head + slot_b + bytes(index_offset - sig_offset - len(slot_b)) + index + bytes(data)
    assert len(out) == image_len
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--board", required=True)
    ap.add_argument("--version", type=int, required=True)
    ap.add_argument("--label", default="")
    ap.add_argument("--chunk-shift", type=int, default=18)
    ap.add_argument("--slots", type=int, default=2)
    ap.add_argument("--key", action="append", default=[], help="Ed25519 private key (PEM)")
    ap.add_argument("-s", "--segment", action="append", required=True)
    ap.add_argument("-o", "--output", required=True)
    ap.add_argument("--zero-chunks", action="store_true",
                    help="store all-zero chunks of compressed segments empty (incompat bit 2)")
    a = ap.parse_args()
    segs = []
    for spec in a.segment:
        name, _, rest = spec.partition("=")
        parts = rest.split(",")
        opts = dict(p.split("=", 1) for p in parts[1:])
        segs.append(dict(name=name, target=opts.get("target", name),
                         raw=open(parts[0], "rb").read(), toff=int(opts.get("offset", 0)),
                         comp={"none": 0, "gzip": 1, "zstd": 2}[opts.get("compress", "none")]))
    sde = os.environ.get("SOURCE_DATE_EPOCH")
    out = build(segs, a.board, a.version, a.label, a.chunk_shift, a.slots,
                int(sde) if sde else 0, a.key, 1 if sde else 0, zero_chunks=a.zero_chunks)
    tmp = a.output + ".tmp"
    open(tmp, "wb").write(out)
    os.replace(tmp, a.output)


if __name__ == "__main__":
    main()
