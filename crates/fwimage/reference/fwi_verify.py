#!/usr/bin/env python3
"""Independent verifier of fwpack container images, format version 2.

Written from docs/FORMAT.md ("The firmware container (.fwi), format
version 2") alone, without reading the Rust implementation, so that the
spec is shown to suffice and the two readers can disagree. Standard
library only, plus the `openssl` command (Ed25519) and `zstd` (zstd
chunks; the frame header is parsed here, per RFC 8878).

    fwi_verify.py IMAGE --pubkey PUB.pem [--pubkey ...] [--board B]

Exit 0 with a one-line summary, or 1 with "REFUSED: <check>: <why>".
"""
import argparse
import hashlib
import os
import struct
import subprocess
import sys
import tempfile
import zlib

MIB = 1 << 20
ALPHABET = set(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._+-")


class Refused(Exception):
    pass


def need(cond, check, why):
    if not cond:
        raise Refused(f"{check}: {why}")


def ceil_div(a, b):
    return -(-a // b)


# CRC32C (Castagnoli), reflected, table-driven. Slow but plain.
_T = []
for _i in range(256):
    _c = _i
    for _ in range(8):
        _c = (_c >> 1) ^ 0x82F63B78 if _c & 1 else _c >> 1
    _T.append(_c)


def crc32c(data, crc=0):
    c, t = crc ^ 0xFFFFFFFF, _T
    for b in data:
        c = t[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


# Ed25519 point decoding, only to refuse small-order keys and R values
# ("verify_strict semantics"); the signature itself is checked by openssl.
P = 2**255 - 19
L = 2**252 + 27742317777372353535851937790883648493
D = -121665 * pow(121666, P - 2, P) % P


def small_order_or_invalid(enc):
    y = int.from_bytes(enc, "little")
    sign, y = y >> 255, y & ((1 << 255) - 1)
    if y >= P:
        return True  # non-canonical encoding
    x2 = (y * y - 1) * pow(D * y * y + 1, P - 2, P) % P
    x = pow(x2, (P + 3) // 8, P)
    if (x * x - x2) % P:
        x = x * pow(2, (P - 1) // 4, P) % P
    if (x * x - x2) % P or (x == 0 and sign):
        return True  # not on the curve
    if x & 1 != sign:
        x = P - x
    for _ in range(3):  # times 8 (complete affine doubling, a = -1)
        t = D * x * x * y * y % P
        x, y = 2 * x * y * pow(1 + t, P - 2, P) % P, (y * y + x * x) * pow(1 - t, P - 2, P) % P
    return (x, y) == (0, 1)


def raw_pubkey(pem):
    der = subprocess.run(["openssl", "pkey", "-pubin", "-in", pem, "-outform", "DER"],
                         capture_output=True).stdout
    # SubjectPublicKeyInfo of an Ed25519 key: 12 fixed bytes, then the key.
    if len(der) != 44 or der[:12] != bytes.fromhex("302a300506032b6570032100"):
        sys.exit(f"fwi_verify: {pem}: not an Ed25519 public key (PEM)")
    return der[12:]


def ed25519_ok(pem, raw, msg, sig):
    if small_order_or_invalid(raw) or small_order_or_invalid(sig[:32]):
        return False
    if int.from_bytes(sig[32:], "little") >= L:
        return False  # non-canonical S
    with tempfile.TemporaryDirectory() as d:
        open(os.path.join(d, "m"), "wb").write(msg)
        open(os.path.join(d, "s"), "wb").write(sig)
        r = subprocess.run(["openssl", "pkeyutl", "-verify", "-pubin", "-inkey", pem, "-rawin",
                            "-in", os.path.join(d, "m"), "-sigfile", os.path.join(d, "s")],
                           capture_output=True)
    return r.returncode == 0


def text(b, check, nonempty):
    s, _, rest = b.partition(b"\0")
    need(not rest.strip(b"\0"), check, "bytes after the first NUL are not all NUL")
    need(s or not nonempty, check, "empty")
    try:
        return s.decode("utf-8")
    except UnicodeDecodeError:
        raise Refused(f"{check}: not UTF-8")


def ident(b, check):
    s = text(b, check, True)
    need(set(s.encode()) <= ALPHABET, check, f"{s!r} has a byte outside [A-Za-z0-9._+-]")
    return s


def unzstd(buf, raw_len, chunk_size, check):
    """RFC 8878: exactly one frame, no dictionary, content size == raw_len,
    window <= chunk_size, checksum present; then `zstd -d` checks it."""
    need(len(buf) >= 6 and buf[:4] == b"\x28\xb5\x2f\xfd", check, "not a zstd frame (magic)")
    fhd = buf[4]
    fcs_flag, single, did_flag = fhd >> 6, fhd >> 5 & 1, fhd & 3
    need(not fhd & 8, check, "reserved bit of the frame header descriptor set")
    need(fhd & 4, check, "no content checksum")
    pos, window = 5, None
    if not single:
        exp, mant = buf[5] >> 3, buf[5] & 7
        window = (1 << (10 + exp)) + ((1 << (10 + exp)) // 8) * mant
        pos += 1
    n = (0, 1, 2, 4)[did_flag]
    need(int.from_bytes(buf[pos:pos + n], "little") == 0, check, "uses a dictionary")
    pos += n
    n = (single, 2, 4, 8)[fcs_flag]
    need(n, check, "no frame content size")
    fcs = int.from_bytes(buf[pos:pos + n], "little") + (256 if n == 2 else 0)
    pos += n
    need(fcs == raw_len, check, f"frame content size {fcs} != chunk raw length {raw_len}")
    window = fcs if single else window
    need(window <= chunk_size, check, f"window {window} > chunk_size {chunk_size}")
    while True:  # walk the blocks to find where the frame ends
        need(pos + 3 <= len(buf), check, "truncated frame")
        bh = int.from_bytes(buf[pos:pos + 3], "little")
        need((bh >> 1) & 3 != 3, check, "reserved block type")
        pos += 3 + (1 if (bh >> 1) & 3 == 1 else bh >> 3)
        if bh & 1:
            break
    need(pos + 4 == len(buf), check,
         "truncated frame" if pos + 4 > len(buf) else "bytes after the frame")
    r = subprocess.run(["zstd", "-d", "-q", "-c", f"--memory={chunk_size}"],
                       input=buf, capture_output=True)
    need(r.returncode == 0, check, "zstd -d: " + r.stderr.decode(errors="replace").strip())
    return r.stdout


def ungzip(buf, raw_len, check):
    # zlib refuses reserved FLG bits and checks FHCRC; FNAME and FCOMMENT
    # are bounded by the spec (65535 bytes before the NUL), not by zlib.
    need(len(buf) >= 10 and buf[:3] == b"\x1f\x8b\x08", check, "not a gzip member (magic, CM=8)")
    flg, pos = buf[3], 10
    if flg & 4:
        pos += 2 + int.from_bytes(buf[pos:pos + 2], "little")
    for bit in (8, 16):
        if flg & bit:
            end = buf.find(b"\0", pos)
            need(0 <= end - pos <= 65535, check, "gzip FNAME/FCOMMENT missing its NUL or longer than 65535")
            pos = end + 1
    d = zlib.decompressobj(wbits=31)  # exactly one gzip member
    try:
        out = d.decompress(buf, raw_len + 1)
    except zlib.error as e:
        raise Refused(f"{check}: {e}")
    need(len(out) <= raw_len, check, "decodes to more than the raw length")
    need(d.eof, check, "truncated member")
    need(not d.unused_data, check, "bytes after the member")
    return out


def verify(path, pubkeys, board):
    f = open(path, "rb")
    size = os.fstat(f.fileno()).st_size

    def read_at(off, n):
        f.seek(off)
        b = f.read(n)
        need(len(b) == n, "limits", f"file ends before offset {off + n}")
        return b

    # --- header ---
    h = f.read(256)
    need(len(h) == 256 and h[:8] == b"FWPKIMG\0", "header", "not a fwpack image (magic)")
    (ver,) = struct.unpack_from("<H", h, 8)
    need(ver != 1, "header", "format version 1 is no longer supported: re-stamp the payload")
    need(ver == 2, "header", f"format_version {ver} is not 2")
    need(crc32c(h[:252]) == struct.unpack_from("<I", h, 252)[0], "header", "header_crc mismatch")
    (hlen, compat, incompat, hash_alg, crc_alg, sig_alg, block_shift, payload_version, created,
     nseg, seg_entry_len, chunk_shift) = struct.unpack_from("<HIIBBBBQQIIB", h, 10)
    (nslots, chunk_count, crc_count, index_offset, page_count, data_offset,
     image_len) = struct.unpack_from("<IQQQQQQ", h, 52)
    need(hlen == 256, "header", f"header_len {hlen}")
    need(incompat & ~7 == 0, "header", f"unknown incompat_flags {incompat:#x}")
    need((hash_alg, crc_alg, sig_alg, block_shift) == (1, 1, 1, 12), "header",
         "unknown hash/crc/sig algorithm or block_shift")
    need(seg_entry_len == 160, "header", f"segment_entry_len {seg_entry_len}")
    need(h[49:52] == bytes(3) and h[236:252] == bytes(16), "header", "reserved bytes not zero")
    (ext_len,) = struct.unpack_from("<I", h, 232)
    need((ext_len != 0) == bool(incompat & 2) and ext_len <= 4096, "header",
         f"ext_len {ext_len} with incompat bit 1 {'set' if incompat & 2 else 'clear'}")
    board_s = text(h[104:168], "header: board", True)
    label = text(h[168:232], "header: version_label", False)

    # --- limits and derived offsets ---
    need(image_len == size, "limits",
         f"image_len {image_len} but the file has {size} bytes "
         + ("(truncated)" if size < image_len else "(trailing data)"))
    need(1 <= nseg <= 256, "limits", f"segment_count {nseg}")
    need(16 <= chunk_shift <= 20, "limits", f"chunk_shift {chunk_shift}")
    need(1 <= nslots <= 8, "limits", f"sig_slot_count {nslots}")
    need(chunk_count <= image_len // 80, "limits", "chunk_count larger than the file allows")
    need(crc_count <= image_len // 4, "limits", "crc_count larger than the file allows")
    chunk_pages = ceil_div(chunk_count, 51)
    need(page_count == chunk_pages + ceil_div(crc_count, 1024), "limits", "page_count")
    ext_offset = 256 + 160 * nseg + 32 * page_count
    sig_offset = ext_offset + ext_len
    need(sig_offset <= MIB, "limits", f"signed head of {sig_offset} bytes > 1 MiB")
    need(index_offset == ceil_div(sig_offset + 128 * nslots, 4096) * 4096, "limits", "index_offset")
    need(data_offset == index_offset + 4096 * page_count, "limits", "data_offset")
    need(data_offset <= image_len, "limits", "data_offset beyond image_len")
    chunk_size = 1 << chunk_shift

    # --- segment table ---
    table = read_at(256, 160 * nseg)
    segs, names = [], set()
    next_crc = next_chunk = 0
    for i in range(nseg):
        e = table[160 * i:160 * (i + 1)]
        c = f"segment table: segment {i}"
        name, target = ident(e[0:32], c + " name"), ident(e[32:64], c + " target")
        (doff, slen, rlen, toff, first_crc, crc_blocks, comp, flags, first_chunk,
         chunks) = struct.unpack_from("<QQQQIIB3xIII", e, 64)
        need(name not in names, c, f"duplicate name {name!r}")
        names.add(name)
        need(e[105:108] == bytes(3) and e[120:160] == bytes(40), c, "reserved bytes not zero")
        need(flags == 0, c, f"unknown flags {flags:#x}")
        need(comp in (0, 1, 2), c, f"unknown compression {comp}")
        need(doff % 4096 == 0 and doff >= data_offset, c, f"data_offset {doff}")
        need(rlen >= 1, c, "raw_len 0")
        need(toff % 512 == 0, c, f"target_offset {toff} not a multiple of 512")
        need(comp != 0 or slen == rlen, c, "uncompressed but stored_len != raw_len")
        need(crc_blocks == ceil_div(rlen, 4096), c, "crc_blocks")
        need(chunks == ceil_div(rlen, chunk_size), c, "chunks")
        need(first_crc == next_crc, c, "first_crc")
        need(first_chunk == next_chunk, c, "first_chunk")
        next_crc, next_chunk = next_crc + crc_blocks, next_chunk + chunks
        if segs:
            p = segs[-1]
            need(p["doff"] + p["slen"] <= doff, c, "overlaps the previous segment in the file")
        segs.append(dict(name=name, target=target, doff=doff, slen=slen, rlen=rlen, toff=toff,
                         first_crc=first_crc, comp=comp, first_chunk=first_chunk, chunks=chunks))
    need(next_crc == crc_count, "segment table", "sum of crc_blocks != crc_count")
    need(next_chunk == chunk_count, "segment table", "sum of chunks != chunk_count")
    need(segs[-1]["doff"] + segs[-1]["slen"] == image_len, "segment table",
         "last segment does not end at image_len")
    by_target = sorted(segs, key=lambda s: (s["target"], s["toff"]))
    for a, b in zip(by_target, by_target[1:]):
        need(a["target"] != b["target"] or a["toff"] + a["rlen"] <= b["toff"], "segment table",
             f"segments {a['name']} and {b['name']} overlap in target {a['target']}")
    compressed = any(s["comp"] for s in segs)
    # FORMAT.md states only this direction; bit 0 without a compressed
    # segment is accepted (as fwpack does).
    need(incompat & 1 or not compressed, "header",
         "a segment is compressed but incompat bit 0 is clear")

    # --- signature ---
    page_hashes = read_at(256 + 160 * nseg, 32 * page_count)
    ext = read_at(ext_offset, ext_len)
    sbom, at, last_type = None, 0, -1
    while at < ext_len:
        need(at + 8 <= ext_len, "head extension", "record header past ext_len")
        rtype, rflags, rlen = struct.unpack_from("<HHI", ext, at)
        need(rflags & ~1 == 0, "head extension", f"record {rtype}: unknown flags {rflags:#x}")
        need(rtype > last_type, "head extension", f"record {rtype} not in ascending order")
        need(at + 8 + rlen <= ext_len, "head extension", f"record {rtype} value past ext_len")
        value = ext[at + 8:at + 8 + rlen]
        if rtype == 1:
            need(rlen == 32, "head extension", f"SBOM record of {rlen} bytes")
            sbom = value.hex()
        else:
            need(rflags & 1, "head extension", f"unknown must-understand record {rtype}")
        last_type, at = rtype, at + 8 + rlen
    head = h + table + page_hashes + ext
    image_id = hashlib.sha256(head).hexdigest()
    msg = b"FWPKSIG2" + bytes.fromhex(image_id)
    trusted = {hashlib.sha256(raw).digest(): (pem, raw) for pem, raw in pubkeys}
    slots = read_at(sig_offset, 128 * nslots)
    good = 0
    for j in range(nslots):
        s = slots[128 * j:128 * (j + 1)]
        if s[0] == 0:
            need(s == bytes(128), "signature", f"empty slot {j} is not all zero")
            continue
        need(s[0] == 1, "signature", f"slot {j}: unknown alg {s[0]}")
        need(s[1:8] == bytes(7) and s[104:128] == bytes(24), "signature",
             f"slot {j}: reserved bytes not zero")
        need(s[8:40] != bytes(32), "signature", f"slot {j}: key_id is zero")
        if s[8:40] in trusted:
            pem, raw = trusted[s[8:40]]
            need(ed25519_ok(pem, raw, msg, s[40:104]), "signature",
                 f"slot {j} by trusted key {s[8:16].hex()}… does not verify")
            good += 1
    need(good, "signature", "no slot is signed by a trusted key")
    need(board is None or board == board_s, "board", f"image is for {board_s!r}, not {board!r}")
    need(read_at(sig_offset + 128 * nslots, index_offset - sig_offset - 128 * nslots)
         == bytes(index_offset - sig_offset - 128 * nslots), "padding",
         "bytes between the signature slots and the index are not zero")

    # --- index pages, each against its signed page hash ---
    pages = []
    for p in range(page_count):
        pg = read_at(index_offset + 4096 * p, 4096)
        need(hashlib.sha256(pg).digest() == page_hashes[32 * p:32 * (p + 1)], f"page hash {p}",
             "index page does not match its signed hash")
        pages.append(pg)
    entries = []
    for q in range(chunk_pages):
        pg = pages[q]
        used = min(51, chunk_count - 51 * q)
        need(pg[80 * used:] == bytes(4096 - 80 * used), f"chunk page {q}",
             "unused entries or the last 16 bytes are not zero")
        entries += [pg[80 * j:80 * (j + 1)] for j in range(used)]
    crc_bytes = b"".join(pages[chunk_pages:])
    need(crc_bytes[4 * crc_count:] == bytes(len(crc_bytes) - 4 * crc_count), "CRC page",
         "padding after the last CRC entry is not zero")
    crcs = struct.unpack_from(f"<{crc_count}I", crc_bytes)

    # --- chunk entries: all layout rules before any data is read ---
    plan = []
    for s in segs:
        off = s["doff"]
        for i in range(s["chunks"]):
            k = s["first_chunk"] + i
            e = entries[k]
            stored_sha, raw_sha = e[0:32], e[32:64]
            soff, slen, res = struct.unpack_from("<QII", e, 64)
            rl = min(chunk_size, s["rlen"] - i * chunk_size)
            c = f"chunk {k} (segment {s['name']} chunk {i})"
            need(res == 0, c, "reserved bytes not zero")
            need(soff == off, c, f"stored_offset {soff}, expected {off}")
            # stored_len 0: a zero chunk, only with incompat bit 2 and only
            # in a compressed segment ("Zero chunks").
            need(slen != 0 or (incompat & 4 and s["comp"]), c,
                 "stored_len 0 without incompat bit 2 or in an uncompressed segment")
            need(slen <= rl + rl // 64 + 1024, c, f"stored_len {slen} out of bounds")
            need(s["comp"] or (slen == rl and raw_sha == stored_sha), c,
                 "uncompressed chunk: stored_len != raw length or raw_sha256 != stored_sha256")
            plan.append((k, c, s, i, soff, slen, rl, stored_sha, raw_sha))
            off += slen
        need(off == s["doff"] + s["slen"], f"segment {s['name']}",
             "chunk stored lengths do not add up to the segment's stored_len")

    # --- one pass over the data ---
    pos, crc, total_raw = data_offset, 0, 0
    for k, c, s, i, soff, slen, rl, stored_sha, raw_sha in plan:
        if soff > pos:
            need(read_at(pos, soff - pos) == bytes(soff - pos), "padding",
                 f"bytes [{pos}, {soff}) before segment {s['name']} are not zero")
        buf = read_at(soff, slen)
        pos = soff + slen
        need(hashlib.sha256(buf).digest() == stored_sha, c, "stored hash mismatch")
        if s["comp"] == 0:
            raw = buf
        elif slen == 0:
            raw = bytes(rl)  # a zero chunk; its raw hash is still checked below
        elif s["comp"] == 1:
            raw = ungzip(buf, rl, c + ": gzip")
        else:
            raw = unzstd(buf, rl, chunk_size, c + ": zstd")
        need(len(raw) == rl, c, f"decodes to {len(raw)} bytes, expected {rl}")
        need(hashlib.sha256(raw).digest() == raw_sha, c, "raw hash mismatch")
        b0 = s["first_crc"] + i * (chunk_size // 4096)
        for j in range(0, rl, 4096):
            crc = crc32c(raw[j:j + 4096], crc)
            blk = b0 + j // 4096
            need(crc == crcs[blk], f"CRC block {blk}", "chained CRC32C mismatch")
        total_raw += rl
    need(pos == image_len, "padding", "data does not end at image_len")
    return (f"OK {path}: board={board_s} version={payload_version} label={label!r} "
            f"segments={nseg} chunks={chunk_count} chunk_size={chunk_size} raw={total_raw} "
            f"signatures={good} image_id={image_id} sbom={sbom}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("image")
    ap.add_argument("--pubkey", action="append", required=True, help="trusted Ed25519 PEM")
    ap.add_argument("--board")
    a = ap.parse_args()
    keys = [(p, raw_pubkey(p)) for p in a.pubkey]
    try:
        print(verify(a.image, keys, a.board))
    except Refused as e:
        sys.exit(f"fwi_verify: REFUSED: {e}")
    except OSError as e:
        sys.exit(f"fwi_verify: {e}")


if __name__ == "__main__":
    main()
