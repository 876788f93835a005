#!/usr/bin/env python3
"""Test images for format-2 readers, made with fwi_write.py's builder.

    fwi_cases.py OUTDIR --key KEY.pem [--other OTHER.pem] [--check PUB.pem]

Writes OUTDIR/*.fwi and OUTDIR/cases.tsv ("file<TAB>expected[<TAB>key]"):
`ok` for an image a reader must accept, else a substring of the check
fwi_verify.py names when it refuses it; a third column names the public key
(PEM, in OUTDIR) to trust instead of the one matching KEY. Every refused image is correctly signed by KEY
(re-signed after the edit), so a reader must refuse it for the rule it
breaks, not for the signature. --check runs fwi_verify on every case
(the self-test of the two scripts); the Rust tests run `fwpack verify`.
"""
import argparse
import base64
import gzip
import hashlib
import os
import struct
import subprocess
import sys
import tempfile
import zlib

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fwi_verify  # noqa: E402
from fwi_verify import ceil_div  # noqa: E402
from fwi_write import build, compress, run  # noqa: E402


def u(b, off, fmt):
    return struct.unpack_from("<" + fmt, b, off)[0]


def resign(img, keys):
    """Recompute header_crc, page hashes and the signatures of slots 0..len(keys)-1."""
    b = bytearray(img)
    b[252:256] = struct.pack("<I", fwi_verify.crc32c(bytes(b[:252])))
    nseg, index_offset, pages = u(b, 40, "I"), u(b, 72, "Q"), u(b, 80, "Q")
    pht = 256 + 160 * nseg
    for p in range(pages):
        pg = bytes(b[index_offset + 4096 * p:index_offset + 4096 * (p + 1)])
        b[pht + 32 * p:pht + 32 * (p + 1)] = hashlib.sha256(pg).digest()
    sig_offset = pht + 32 * pages
    with tempfile.TemporaryDirectory() as d:
        m = os.path.join(d, "m")
        open(m, "wb").write(b"FWPKSIG2" + hashlib.sha256(bytes(b[:sig_offset])).digest())
        for j, key in enumerate(keys):
            der = run(["openssl", "pkey", "-in", key, "-pubout", "-outform", "DER"])
            sig = run(["openssl", "pkeyutl", "-sign", "-inkey", key, "-rawin", "-in", m])
            s = sig_offset + 128 * j
            b[s:s + 128] = b"\x01" + bytes(7) + hashlib.sha256(der[-32:]).digest() + sig + bytes(24)
    return bytes(b)


def patched(img, keys, *edits):
    b = bytearray(img)
    for off, val in edits:
        b[off:off + len(val)] = val
    return resign(b, keys)


def flipped(img, off, bit=0x40):
    return img[:off] + bytes([img[off] ^ bit]) + img[off + 1:]


def first_bad(bad):
    """An encoder that breaks only the first compressed chunk."""
    state = {"done": False}

    def enc(raw, comp):
        if comp and not state["done"]:
            state["done"] = True
            return bad(raw, comp)
        return compress(raw, comp)
    return enc


def gz(raw, flags, extra=b"", name=b"", comment=b""):
    """A gzip member built by hand, with optional FEXTRA/FNAME/FCOMMENT fields."""
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    body = c.compress(raw) + c.flush()
    h = b"\x1f\x8b\x08" + bytes([flags]) + bytes(4) + b"\x00\xff"
    if flags & 4:
        h += struct.pack("<H", len(extra)) + extra
    if flags & 8:
        h += name + b"\0"
    if flags & 16:
        h += comment + b"\0"
    return h + body + struct.pack("<II", zlib.crc32(raw), len(raw) & 0xFFFFFFFF)


def noise(n):
    return b"".join(hashlib.sha256(b"%d" % i).digest() for i in range(ceil_div(n, 32)))[:n]


def zstd_stdin(raw, *opts):
    return run(["zstd", "-q", "-c", "-3", *opts], input=raw)


def zstd_with_fcs(raw, wd):
    """A frame from stdin (no content size, Window_Descriptor present) with a
    4-byte content size inserted and Window_Descriptor set to `wd`."""
    f = zstd_stdin(raw)
    assert f[4] == 0x04, f[4]  # FCS_flag 0, not single segment, checksum
    return f[:4] + bytes([0x84, wd]) + struct.pack("<I", len(raw)) + f[6:]


def payloads():
    rootfs = bytes((i * 2654435761 >> 13) & 255 for i in range(300_000))
    boot = b"\x07" * 100_000
    text = b"".join(b"line %d of a compressible log\n" % i for i in range(12_000))
    return rootfs, boot, text


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("outdir")
    ap.add_argument("--key", required=True)
    ap.add_argument("--other", help="a second, untrusted key (rotation cases)")
    ap.add_argument("--check", help="trusted public key: run fwi_verify on every case")
    a = ap.parse_args()
    os.makedirs(a.outdir, exist_ok=True)
    rootfs, boot, text = payloads()
    K = [a.key]
    cases = []

    def seg(name, raw, comp=0, target=None, toff=0):
        return dict(name=name, target=target or name, raw=raw, comp=comp, toff=toff)

    def add(name, expected, img, trust=None):
        open(os.path.join(a.outdir, name + ".fwi"), "wb").write(img)
        cases.append((name + ".fwi", expected, trust))

    three = [seg("rootfs", rootfs, 0, "system"), seg("boot", boot, 1), seg("log", text, 2)]
    base = build(three, "rpi-zero2w", 5, "2026.11", 16, 2, 1700000000, K, 1)
    add("ok-three", "ok", base)
    add("ok-gzip-1m", "ok", build([seg("a", text, 1)], "b", 1, "", 20, 1, 0, K))
    add("ok-zstd-256k", "ok", build([seg("a", text + rootfs, 2)], "b", 1, "", 18, 8, 0, K))
    # A zstd frame with a Window_Descriptor (not single-segment) of exactly chunk_size.
    add("ok-zstd-window-descriptor", "ok",
        build([seg("a", text, 2)], "b", 1, "", 16, 1, 0, K,
              encode=lambda r, c: zstd_with_fcs(r, 0x30)))
    # Two chunk pages and two CRC pages; segments sharing a target at offsets.
    big = (rootfs * 14)[:4_300_000]
    add("ok-two-pages", "ok", build([seg("x", big, 0, "sys"), seg("y", boot, 1, "sys", 4_300_800)],
                                    "b", 3, "big", 16, 2, 0, K))
    if a.other:  # a slot by a key the verifier does not know is ignored
        add("ok-rotation", "ok", build(three, "b", 1, "", 16, 2, 0, [a.other, a.key]))
        add("bad-no-trusted-slot", "no slot is signed by a trusted key",
            build(three, "b", 1, "", 16, 2, 0, [a.other]))

    def enc_case(name, expected, bad, segs=three):
        add(name, expected, build(segs, "b", 1, "", 16, 2, 0, K, encode=first_bad(bad)))

    enc_case("bad-gzip-trailing", "bytes after the member", lambda r, c: compress(r, 1) + b"\0")
    enc_case("bad-gzip-two-members", "bytes after the member",
             lambda r, c: compress(r[:100], 1) + compress(r[100:], 1))
    enc_case("bad-gzip-isize", "incorrect length check",
             lambda r, c: compress(r, 1)[:-4] + struct.pack("<I", len(r) + 1))
    enc_case("bad-gzip-crc", "incorrect data check",
             lambda r, c: compress(r, 1)[:-8] + bytes(4) + compress(r, 1)[-4:])
    enc_case("bad-gzip-longer", "decodes to more", lambda r, c: gzip.compress(r + b"!", mtime=0))
    enc_case("bad-gzip-shorter", "decodes to", lambda r, c: gzip.compress(r[:-1], mtime=0))
    z = [seg("log", text, 2)]
    enc_case("bad-zstd-trailing", "bytes after the frame", lambda r, c: compress(r, 2) + b"\0", z)
    enc_case("bad-zstd-two-frames", "bytes after the frame",
             lambda r, c: compress(r, 2) + zstd_stdin(b"", "--content-size"), z)
    enc_case("bad-zstd-skippable", "magic",
             lambda r, c: b"\x50\x2a\x4d\x18" + struct.pack("<I", 4) + b"skip" + compress(r, 2), z)
    enc_case("bad-zstd-no-checksum", "no content checksum",
             lambda r, c: run(["zstd", "-q", "-c", "--no-check", "--stream-size=%d" % len(r)],
                              input=r), z)
    enc_case("bad-zstd-no-content-size", "no frame content size", lambda r, c: zstd_stdin(r), z)
    enc_case("bad-zstd-window", "window", lambda r, c: zstd_with_fcs(r, 0x58), z)  # 2 MiB
    enc_case("bad-zstd-content-size", "frame content size",
             lambda r, c: zstd_with_fcs(r, 0x30)[:6] + struct.pack("<I", len(r) - 1)
             + zstd_with_fcs(r, 0x30)[10:], z)
    enc_case("bad-zstd-checksum", "zstd -d",
             lambda r, c: compress(r, 2)[:-1] + bytes([compress(r, 2)[-1] ^ 1]), z)
    enc_case("bad-zstd-dictionary", "dictionary",
             lambda r, c: (lambda f: f[:4] + bytes([f[4] | 1]) + f[5:6] + b"\x07" + f[6:])(
                 zstd_with_fcs(r, 0x30)), z)

    # Head rules, each re-signed so that only the rule is broken.
    nseg = 3
    t0 = 256  # segment table
    add("bad-version-1", "format version 1", patched(base, K, (8, b"\x01\x00")))
    add("bad-incompat-unknown", "incompat", patched(base, K, (16, b"\x03\x00\x00\x00")))
    add("bad-incompat-clear", "incompat bit 0 is clear", patched(base, K, (16, b"\x00")))
    add("bad-header-reserved", "reserved", patched(base, K, (240, b"\x01")))
    add("bad-board-after-nul", "after the first NUL", patched(base, K, (104 + 20, b"x")))
    add("bad-chunk-shift", "chunk_shift", patched(base, K, (48, b"\x0f")))
    add("bad-name-alphabet", "outside", patched(base, K, (t0 + 2, b"/")))
    add("bad-name-duplicate", "duplicate", patched(base, K, (t0 + 160, b"rootfs\0\0")))
    add("bad-target-empty", "target", patched(base, K, (t0 + 32, bytes(32))))
    add("bad-target-offset", "multiple of 512", patched(base, K, (t0 + 88, b"\x01")))
    add("bad-target-overlap", "overlap",
        patched(base, K, (t0 + 160 + 32, b"system\0\0"), (t0 + 160 + 88, struct.pack("<Q", 512))))
    add("bad-segment-flags", "flags", patched(base, K, (t0 + 108, b"\x01")))
    add("bad-segment-reserved", "reserved", patched(base, K, (t0 + 130, b"\x01")))
    add("bad-compression-id", "compression", patched(base, K, (t0 + 160 + 104, b"\x03")))
    add("bad-first-crc", "first_crc", patched(base, K, (t0 + 160 + 96, b"\x00")))
    index_offset, data_offset = u(base, 72, "Q"), u(base, 88, "Q")
    pages = u(base, 80, "Q")
    chunk_count, crc_count = u(base, 56, "Q"), u(base, 64, "Q")
    add("bad-chunk-page-tail", "chunk page", patched(base, K, (index_offset + 4095, b"\x01")))
    add("bad-chunk-reserved", "reserved", patched(base, K, (index_offset + 76, b"\x01")))
    add("bad-chunk-offset", "stored_offset",
        patched(base, K, (index_offset + 64, struct.pack("<Q", data_offset + 4096))))
    e2 = index_offset + 80 * (chunk_count - 1)  # last chunk: of the zstd segment
    add("bad-raw-hash", "raw hash", patched(base, K, (e2 + 40, bytes([base[e2 + 40] ^ 1]))))
    crc0 = index_offset + 4096 * (pages - 1)
    add("bad-crc-chain", "CRC block 3", patched(base, K, (crc0 + 12, b"\x00\x00\x00\x00")))
    add("bad-crc-padding", "CRC page", patched(base, K, (crc0 + 4 * crc_count, b"\x01")))
    # Unsigned bytes that must be zero (no re-signing needed: they are not signed).
    sig_offset = 256 + 160 * nseg + 32 * pages
    add("bad-empty-slot", "empty slot", flipped(base, sig_offset + 128 + 100))
    add("bad-slot-padding", "padding", flipped(base, sig_offset + 256 + 5))
    add("bad-segment-gap", "padding", flipped(base, u(base, t0 + 160 + 64, "Q") - 1))
    # Two slots by the trusted key, the second one broken: every trusted slot must verify.
    s2 = resign(base, K + K)
    add("bad-second-trusted-slot", "does not verify", flipped(s2, sig_offset + 128 + 50, 1))

    # Edges of the layout: full chunk pages, many segments, a full CRC page,
    # zero gaps larger than the 4096 alignment, touching target ranges.
    tiny = [seg("s%d" % i, noise(512), 0, "t", 512 * i) for i in range(51)]
    add("ok-51-segments", "ok", build(tiny, "b", 1, "", 16, 1, 0, K))
    many = [seg("s%d" % i, noise(100 + i), i % 3, "t%d" % (i % 7), 512 * (i // 7))
            for i in range(256)]
    add("ok-256-segments", "ok", build(many, "b", 1, "", 16, 1, 0, K))
    add("ok-full-crc-page", "ok", build([seg("z", bytes(4 << 20), 1)], "b", 1, "", 16, 1, 0, K))
    add("ok-zstd-short-last-chunk", "ok",
        build([seg("a", text[:65536 + 100], 2)], "b", 1, "", 16, 1, 0, K))
    gapped = [dict(seg("a", boot), gap=8192), dict(seg("b", rootfs), gap=4096)]
    add("ok-wider-zero-gaps", "ok", build(gapped, "b", 1, "", 16, 1, 0, K))
    add("ok-unknown-compat-flags", "ok", patched(base, K, (12, b"\xfe\xff\xff\xff")))
    add("ok-gzip-header-fields", "ok",
        build([seg("a", text, 1)], "b", 1, "", 16, 1, 0, K,
              encode=lambda r, c: gz(r, 4 | 8 | 16, b"xx\x02\x00hi", b"log.img", b"made by hand")))
    add("ok-zstd-dictionary-id-zero", "ok",
        build([seg("a", text, 2)], "b", 1, "", 16, 1, 0, K,
              encode=lambda r, c: (lambda f: f[:4] + bytes([f[4] | 1]) + f[5:6] + b"\0" + f[6:])(
                  zstd_with_fcs(r, 0x30))))
    plain = build([seg("a", boot)], "b", 1, "", 16, 2, 0, K)
    # The spec says only "if any segment is compressed, incompat bit 0 is set".
    add("ok-incompat-without-compression", "ok", patched(plain, K, (16, b"\x01")))
    add("bad-label-utf8", "not UTF-8", patched(base, K, (168, b"\xff")))
    add("bad-uncompressed-raw-hash", "raw_sha256 != stored_sha256",
        patched(plain, K, (u(plain, 72, "Q") + 33, b"\x00\x01")))
    add("bad-stored-len-bound", "out of bounds",
        build([seg("a", noise(65536), 1)], "b", 1, "", 16, 1, 0, K,
              encode=lambda r, c: gz(r, 4, noise(3000))))
    s_off = 256 + 160 + 32 * u(plain, 80, "Q")
    sig_s = int.from_bytes(plain[s_off + 72:s_off + 104], "little") + fwi_verify.L
    if sig_s < 1 << 256:
        add("bad-signature-s-not-canonical", "does not verify",
            plain[:s_off + 72] + sig_s.to_bytes(32, "little") + plain[s_off + 104:])
    add("bad-slot-alg", "unknown alg", flipped(plain, s_off + 128, 2))

    # Decoder edges of RFC 1952 / RFC 8878 the spec leaves to the RFCs.
    def gz_hcrc(r, good=True):
        m = gz(r, 2)  # FHCRC: CRC16 of the 10 header bytes follows them
        crc16 = zlib.crc32(m[:10]) & 0xFFFF
        return m[:10] + struct.pack("<H", crc16 if good else crc16 ^ 1) + m[10:]
    add("ok-gzip-header-crc", "ok",
        build([seg("a", text, 1)], "b", 1, "", 16, 1, 0, K, encode=lambda r, c: gz_hcrc(r)))
    add("bad-gzip-header-crc", "header crc",
        build([seg("a", text, 1)], "b", 1, "", 16, 1, 0, K,
              encode=first_bad(lambda r, c: gz_hcrc(r, False))))
    add("bad-gzip-reserved-flag", "unknown header flags",
        build([seg("a", text, 1)], "b", 1, "", 16, 1, 0, K,
              encode=first_bad(lambda r, c: gz(r, 0x20))))
    add("bad-zstd-reserved-bit", "reserved bit",
        build([seg("a", text, 2)], "b", 1, "", 16, 1, 0, K,
              encode=first_bad(lambda r, c: (lambda f: f[:4] + bytes([f[4] | 8]) + f[5:])(
                  compress(r, 2)))))
    add("ok-zstd-unused-bit", "ok",  # RFC 8878: a decoder shall not interpret bit 4
        build([seg("a", text, 2)], "b", 1, "", 16, 1, 0, K,
              encode=lambda r, c: (lambda f: f[:4] + bytes([f[4] | 16]) + f[5:])(compress(r, 2))))

    # stored_len bound raw + raw/64 + 1024 with integer division: a 100-byte
    # last chunk may store 1125 bytes, not 1126.
    def gz_sized(r, c, total):
        if len(r) != 100:
            return compress(r, c)
        return gz(r, 4, bytes(total - len(gz(r, 4))))
    tail = noise(65536 + 100)
    add("ok-stored-len-at-bound", "ok", build([seg("a", tail, 1)], "b", 1, "", 16, 1, 0, K,
                                              encode=lambda r, c: gz_sized(r, c, 1125)))
    add("bad-stored-len-over-bound", "out of bounds",
        build([seg("a", tail, 1)], "b", 1, "", 16, 1, 0, K,
              encode=lambda r, c: gz_sized(r, c, 1126)))

    # Unsigned bytes outside the segments' own range.
    g = build([dict(seg("a", boot), gap=8192)], "b", 1, "", 16, 1, 0, K)
    add("bad-gap-before-first-segment", "padding", flipped(g, u(g, 88, "Q") + 100))
    add("bad-slot-zero-key-id", "key_id is zero", flipped(plain, s_off + 128, 1))
    if a.other:
        r2 = build([seg("a", boot)], "b", 1, "", 16, 2, 0, [a.key, a.other])
        add("bad-untrusted-slot-reserved", "reserved", flipped(r2, s_off + 128 + 110))

    # verify_strict: signatures a cofactorless check (openssl) accepts.
    # R = identity and S = h*a verifies for the real key A = a*B; a trusted
    # key that is the identity point verifies R = identity, S = 0 for any
    # message. Both must be refused.
    seed = run(["openssl", "pkey", "-in", a.key, "-outform", "DER"])[-32:]
    d = bytearray(hashlib.sha512(seed).digest()[:32])
    d[0] &= 248
    d[31] = (d[31] & 127) | 64
    a_scalar = int.from_bytes(d, "little")
    pub = run(["openssl", "pkey", "-in", a.key, "-pubout", "-outform", "DER"])[-32:]
    ident = (1).to_bytes(32, "little")
    msg = b"FWPKSIG2" + hashlib.sha256(plain[:s_off]).digest()
    h = int.from_bytes(hashlib.sha512(ident + pub + msg).digest(), "little") % fwi_verify.L
    forged = ident + (h * a_scalar % fwi_verify.L).to_bytes(32, "little")
    add("bad-signature-small-order-r", "does not verify",
        plain[:s_off + 40] + forged + plain[s_off + 104:])
    spki = bytes.fromhex("302a300506032b6570032100")
    pem = "-----BEGIN PUBLIC KEY-----\n%s\n-----END PUBLIC KEY-----\n" % (
        base64.b64encode(spki + ident).decode())
    open(os.path.join(a.outdir, "small-order.pub.pem"), "w").write(pem)
    slot = b"\x01" + bytes(7) + hashlib.sha256(ident).digest() + ident + bytes(32) + bytes(24)
    add("bad-small-order-key", "does not verify",
        plain[:s_off] + slot + plain[s_off + 128:], "small-order.pub.pem")

    # Counts that would make a reader allocate beyond the file or 1 MiB:
    # refused from the 256-byte header alone (the files are sparse).
    def header_case(name, expected, size, **q):
        h = bytearray(base[:256])
        for off, v in q.values():
            h[off:off + 8] = struct.pack("<Q", v)
        sig = 256 + 160 * u(h, 40, "I") + 32 * u(h, 80, "Q")
        io = ceil_div(sig + 128 * u(h, 52, "I"), 4096) * 4096
        h[72:80] = struct.pack("<Q", io)
        h[88:104] = struct.pack("<QQ", io + 4096 * u(h, 80, "Q"), size)
        h[252:256] = struct.pack("<I", fwi_verify.crc32c(bytes(h[:252])))
        with open(os.path.join(a.outdir, name + ".fwi"), "wb") as f:
            f.write(h)
            f.truncate(size)
        cases.append((name + ".fwi", expected, None))
    cc = 51 * 33000  # chunk pages alone put sig_offset past 1 MiB
    header_case("bad-head-over-1mib", "> 1 MiB", 80 * cc + 4096, c=(56, cc), r=(64, 16),
                p=(80, ceil_div(cc, 51) + 1))
    header_case("bad-chunk-count", "chunk_count larger", 1 << 20, c=(56, (1 << 20) // 80 + 1),
                r=(64, 16), p=(80, ceil_div((1 << 20) // 80 + 1, 51) + 1))
    header_case("bad-crc-count", "crc_count larger", 1 << 20, c=(56, 1), r=(64, (1 << 18) + 1),
                p=(80, 1 + ceil_div((1 << 18) + 1, 1024)))
    add("bad-truncated", "truncated", base[:-1])
    add("bad-trailing", "trailing data", base + b"\0")

    # Zero chunks ("Zero chunks", incompat bit 2): all-zero chunks of
    # compressed segments stored empty. First, between and last (a short
    # last one), all-zero segments first, in the middle and last (the file
    # then ends at the last one's data_offset), and an uncompressed
    # segment whose zeros stay stored.
    zc = 65536
    sparse = bytearray(noise(5 * zc + 700))
    sparse[:zc] = bytes(zc)
    sparse[2 * zc:3 * zc] = bytes(zc)
    sparse[5 * zc:] = bytes(700)
    zsegs = [seg("z0", bytes(zc + 9), 2), seg("sparse", bytes(sparse), 1),
             seg("raw0", bytes(5000)), seg("z1", bytes(3 * zc), 1),
             seg("zs", bytes(sparse), 2), seg("z2", bytes(100), 1)]
    zimg = build(zsegs, "b", 1, "", 16, 1, 0, K, zero_chunks=True)
    assert u(zimg, 16, "I") & 4
    add("ok-zero-chunks", "ok", zimg)
    z_io, z_n = u(zimg, 72, "Q"), u(zimg, 56, "Q")
    empty = [k for k in range(z_n)
             if u(zimg, z_io + 4096 * (k // 51) + 80 * (k % 51) + 72, "I") == 0]
    zk = empty[3]  # sparse chunk 2: between chunks with data
    ze = z_io + 4096 * (zk // 51) + 80 * (zk % 51)
    add("bad-zero-chunk-raw-hash", "raw hash",
        patched(zimg, K, (ze + 40, bytes([zimg[ze + 40] ^ 1]))))
    add("bad-zero-chunk-stored-hash", "stored hash mismatch",
        patched(zimg, K, (ze + 3, bytes([zimg[ze + 3] ^ 1]))))
    # Bit 2 clear: an empty chunk is out of bounds (segments with data in
    # every chunk but the empty ones, so only the entry rule applies).
    add("bad-zero-chunk-without-bit-2", "stored_len 0 without incompat bit 2",
        build([seg("sparse", bytes(sparse), 1)], "b", 1, "", 16, 1, 0, K,
              zero_chunks=True, incompat_xor=4))
    # An uncompressed segment with an empty chunk breaks its table rule.
    add("bad-zero-chunk-uncompressed", "stored_len != raw_len",
        build([seg("sparse", bytes(sparse), 0)], "b", 1, "", 16, 1, 0, K,
              encode=lambda r, c: b"" if not any(r) else compress(r, c)))
    # Bit 2 set with no empty chunk is accepted, like bit 0 without compression.
    add("ok-zero-chunk-bit-without-empty-chunks", "ok",
        build([seg("a", text, 1)], "b", 1, "", 16, 1, 0, K, incompat_xor=4))

    with open(os.path.join(a.outdir, "cases.tsv"), "w") as f:
        for name, exp, trust in cases:
            f.write(f"{name}\t{exp}" + (f"\t{trust}\n" if trust else "\n"))
    if a.check:
        keys = [(a.check, fwi_verify.raw_pubkey(a.check))]
        # verify_strict: small-order points (identity, order 2, 4 and 8, with
        # either sign bit) are refused as keys and R values; real keys are not.
        small = ["01" + "00" * 31, "00" * 32, "ec" + "ff" * 30 + "7f",
                 "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a",
                 "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc85"]
        assert all(fwi_verify.small_order_or_invalid(bytes.fromhex(h)) for h in small)
        assert not fwi_verify.small_order_or_invalid(keys[0][1])
        bad = 0
        for name, exp, trust in cases:
            k = keys
            if trust:
                pem = os.path.join(a.outdir, trust)
                k = [(pem, fwi_verify.raw_pubkey(pem))]
            try:
                got = fwi_verify.verify(os.path.join(a.outdir, name), k, None)
                ok = exp == "ok"
            except fwi_verify.Refused as e:
                got = f"REFUSED: {e}"
                ok = exp != "ok" and exp in str(e)
            bad += not ok
            print(f"{'pass' if ok else 'FAIL'} {name}: {got}")
        print(f"{len(cases) - bad}/{len(cases)} cases as expected")
        sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
