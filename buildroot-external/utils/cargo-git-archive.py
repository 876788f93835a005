#!/usr/bin/env python3
"""Recreate the source archive Buildroot downloads for a git + cargo package.

Buildroot fetches a package with FOO_SITE_METHOD = git and the cargo
infrastructure as <name>-<version>-git4-cargoN.tar.gz: the tracked files of
the commit, then `cargo vendor --locked VENDOR` with its configuration in
.cargo/config.toml, packed as a reproducible POSIX tar (sorted names, owner
0, every mtime set to the commit date, gzip -6 -n). The hash of that
archive goes into the package's .hash file, and Buildroot refuses any
download that does not match (BR2_DOWNLOAD_FORCE_CHECK_HASHES).

This script builds the same archive from a local repository so the hash
can be computed, and checked, without Buildroot: run it after changing
FWPACK_VERSION in package/fwpack/fwpack.mk and put the printed line in
package/fwpack/fwpack.hash.

The archive depends on two tool versions, which is why Buildroot encodes a
format number in the name:
- cargo: 1.94 to 1.96 vendor the "cargo5" layout (Buildroot 2026.05.x);
  1.97 added a comment to every .cargo-checksum.json ("cargo6", Buildroot
  2026.08 and later). The suffix is chosen from `cargo --version`.
- GNU tar: 1.35 stores empty device numbers in regular-file headers where
  1.34 stored zeros. With tar 1.34 the headers are rewritten to the 1.35
  form (and their checksums recomputed); nothing else differs.

usage: cargo-git-archive.py REPO COMMIT NAME OUTDIR [MANIFEST]
  MANIFEST: the package's <PKG>_SUBDIR/Cargo.toml, as Buildroot passes it
  to `cargo vendor --manifest-path` (default Cargo.toml)
prints: sha256  <hex>  <archive name>
"""

import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile

BLOCK = 512


def run(cmd, **kw):
    return subprocess.run(cmd, check=True, **kw)


def cargo_format():
    out = run(["cargo", "--version"], capture_output=True, text=True).stdout
    m = re.match(r"cargo (\d+)\.(\d+)", out)
    if not m:
        sys.exit(f"cannot parse `cargo --version`: {out!r}")
    minor = (int(m.group(1)), int(m.group(2)))
    if minor >= (1, 97):
        return "cargo6"
    if minor >= (1, 94):
        return "cargo5"
    sys.exit(f"cargo {minor[0]}.{minor[1]} vendors a layout older than any "
             "supported Buildroot release; use cargo 1.94 or later")


def tar_is_135_or_later():
    out = run(["tar", "--version"], capture_output=True, text=True).stdout
    m = re.search(r"\(GNU tar\) (\d+)\.(\d+)", out)
    if not m:
        sys.exit("GNU tar is required (the archive format is GNU tar's)")
    return (int(m.group(1)), int(m.group(2))) >= (1, 35)


def octal_field(data, off, length):
    raw = data[off:off + length].split(b"\0", 1)[0].strip()
    return int(raw, 8) if raw else 0


def as_tar_135(data):
    """Rewrite a tar 1.34 stream's headers the way tar 1.35 writes them."""
    out = bytearray(data)
    pos = 0
    while pos + BLOCK <= len(out):
        header = out[pos:pos + BLOCK]
        if header == bytes(BLOCK):
            break
        if bytes(header[257:263]) != b"ustar\0":
            sys.exit(f"unexpected tar header at offset {pos}")
        typeflag = header[156:157]
        if typeflag not in (b"3", b"4"):
            out[pos + 329:pos + 345] = bytes(16)
            out[pos + 148:pos + 156] = b" " * 8
            chksum = sum(out[pos:pos + BLOCK])
            out[pos + 148:pos + 156] = b"%06o\0 " % chksum
        size = octal_field(header, 124, 12)
        pos += BLOCK + (size + BLOCK - 1) // BLOCK * BLOCK
    return bytes(out)


def mk_tar_gz(in_dir, base_dir, date, out):
    """Buildroot's reproducible archive of in_dir (files only, sorted)."""
    files = []
    for root, dirs, names in os.walk(in_dir):
        # Symlinks to directories are archived as links, not followed.
        for d in list(dirs):
            if os.path.islink(os.path.join(root, d)):
                names.append(d)
        for n in names:
            rel = os.path.relpath(os.path.join(root, n), in_dir)
            files.append("./" + rel)
    listing = "".join(f + "\n" for f in sorted(files, key=os.fsencode))
    pax = ("delete=atime,delete=ctime,delete=mtime,"
           f"exthdr.name=%d/PaxHeaders/%f,exthdr.mtime={{{date}}}")
    tar = run(["tar", "cf", "-", f"--transform=s#^\\./#{base_dir}/#S",
               "--numeric-owner", "--owner=0", "--group=0",
               f"--mtime={date}", "--format=posix", f"--pax-option={pax}",
               "--mode=go=u,go-w", "-T", "-"],
              cwd=in_dir, input=listing.encode(), capture_output=True,
              env=dict(os.environ, LC_ALL="C")).stdout
    if not tar_is_135_or_later():
        tar = as_tar_135(tar)
    gz = run(["gzip", "-6", "-n"], input=tar, capture_output=True).stdout
    with open(out, "wb") as f:
        f.write(gz)


def main():
    if len(sys.argv) not in (5, 6):
        sys.exit(__doc__.split("usage: ", 1)[1])
    repo, commit, name, outdir = sys.argv[1:5]
    manifest = sys.argv[5] if len(sys.argv) == 6 else "Cargo.toml"
    fmt = cargo_format()
    base = f"{name}-{commit}"
    archive = f"{base}-git4-{fmt}.tar.gz"
    git = ["git", "-C", repo]
    # %ci, as Buildroot's git backend: local time with offset, which tar
    # turns into the same instant.
    date = run(git + ["log", "-1", "--format=%ci", commit],
               capture_output=True, text=True).stdout.strip()
    date = run(["date", "-d", date, "-u", "+%Y-%m-%dT%H:%M:%S+00:00"],
               capture_output=True, text=True).stdout.strip()
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, base)
        os.mkdir(src)
        # Buildroot archives a checkout; `git archive` gives the same files
        # unless .gitattributes asks for export-ignore, which we refuse.
        attrs = run(git + ["ls-tree", "-r", "--name-only", commit],
                    capture_output=True, text=True).stdout.split("\n")
        if any(p.endswith(".gitattributes") for p in attrs):
            sys.exit(".gitattributes present: git archive may differ from "
                     "Buildroot's checkout; extend this script")
        archive_tar = run(git + ["archive", "--format=tar", commit],
                          capture_output=True).stdout
        run(["tar", "-x", "-C", src], input=archive_tar)
        # The download post-process: vendor every crate of Cargo.lock.
        # The redirection truncates .cargo/config.toml before cargo starts,
        # exactly as Buildroot's `cargo vendor ... > .cargo/config.toml`.
        os.makedirs(os.path.join(src, ".cargo"), exist_ok=True)
        config = os.path.join(src, ".cargo", "config.toml")
        open(config, "w").close()
        vendored = run(["cargo", "vendor", "--manifest-path", manifest,
                        "--locked", "VENDOR"], cwd=src,
                       capture_output=True)
        with open(config, "wb") as f:
            f.write(vendored.stdout)
        out = os.path.join(outdir, archive)
        mk_tar_gz(src, base, date, out)
        shutil.rmtree(src)
    with open(out, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    print(f"sha256  {digest}  {archive}")


if __name__ == "__main__":
    main()
