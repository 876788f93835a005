//! The SBOM of a build: an SPDX 2.3 JSON document of everything `fwpack
//! build` puts on the device (docs/ARCHITECTURE.md, "SBOM"). Its SHA-256
//! goes into update.fwi's signed head, so the document is made before the
//! image is stamped and must not mention the image itself.
//!
//! Deterministic: `created` is SOURCE_DATE_EPOCH when set, every list is
//! sorted, SPDXIDs come from names and paths, and the document namespace
//! from the content, so the same inputs give the same bytes.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};
use sha1::Sha1;
use sha2::{Digest, Sha256};

use crate::{Error, UpdaterInfo};

pub const SBOM_NAME: &str = "sbom.spdx.json";

/// Crates compiled into each shipped updater target, from the lock file
/// fwpack was built with (build.rs): target, tls (0/1), name, version,
/// licence, origin.
const UPDATER_CRATES: &str = include_str!(concat!(env!("OUT_DIR"), "/updater-crates.tsv"));

/// What the SBOM describes; paths are read, never written into it.
pub struct Contents<'a> {
    pub board: &'a board::Board,
    pub version: String,
    /// The staged boot partition directory (kernel, DTBs, firmware, the
    /// initramfs archive, generated config files).
    pub boot_dir: &'a Path,
    pub kernel_name: &'a str,
    pub kernel_release: Option<String>,
    pub initramfs: &'a Path,
    pub updater: &'a UpdaterInfo,
    /// The slot root filesystem image, as it goes into slot A and update.fwi.
    pub rootfs: Option<&'a Path>,
    pub created: u64,
}

/// The document's bytes (pretty JSON and a final newline).
pub fn document(c: &Contents) -> Result<Vec<u8>, Error> {
    let mut ids = Ids::default();
    let mut packages = Vec::new();
    let mut files = Vec::new();
    let mut rels = vec![rel(
        "SPDXRef-DOCUMENT",
        "DESCRIBES",
        "SPDXRef-Package-firmware",
    )];

    packages.push(json!({
        "SPDXID": "SPDXRef-Package-firmware",
        "name": format!("{} firmware", c.board.name),
        "versionInfo": c.version,
        "supplier": "NOASSERTION",
        "downloadLocation": "NOASSERTION",
        "filesAnalyzed": true,
        "primaryPackagePurpose": "FIRMWARE",
        "licenseConcluded": "NOASSERTION",
        "licenseDeclared": "NOASSERTION",
        "copyrightText": "NOASSERTION",
        "comment": format!("fwpack build for board {} ({})", c.board.name, c.board.compatible()),
    }));

    // The boot partition, file by file.
    let mut boot = Vec::new();
    walk(c.boot_dir, c.boot_dir, &mut boot)?;
    boot.sort();
    for rel_path in &boot {
        let (sha256, sha1) = hash_file(&c.boot_dir.join(rel_path))?;
        let name = format!("./boot/{rel_path}");
        let id = ids.make("File-boot", rel_path);
        files.push(file(&id, &name, &sha256, &sha1));
        rels.push(rel("SPDXRef-Package-firmware", "CONTAINS", &id));
    }

    // The kernel as a package: what it is, beyond its bytes.
    let (kernel_sha, _) = hash_file(&c.boot_dir.join(c.kernel_name))?;
    let mut kernel = json!({
        "SPDXID": "SPDXRef-Package-kernel",
        "name": "linux",
        "packageFileName": format!("./boot/{}", c.kernel_name),
        "supplier": "NOASSERTION",
        "downloadLocation": "NOASSERTION",
        "filesAnalyzed": false,
        "checksums": [sha256_checksum(&kernel_sha)],
        "primaryPackagePurpose": "OPERATING-SYSTEM",
        "licenseConcluded": "NOASSERTION",
        "licenseDeclared": "GPL-2.0-only WITH Linux-syscall-note",
        "copyrightText": "NOASSERTION",
    });
    if let Some(r) = &c.kernel_release {
        kernel["versionInfo"] = json!(r);
    }
    packages.push(kernel);
    rels.push(rel(
        "SPDXRef-Package-firmware",
        "CONTAINS",
        "SPDXRef-Package-kernel",
    ));

    // The initramfs: every regular file with its hashes.
    let (initramfs_sha, _) = hash_file(c.initramfs)?;
    packages.push(json!({
        "SPDXID": "SPDXRef-Package-initramfs",
        "name": "initramfs",
        "packageFileName": format!("./boot/{}", crate::INITRAMFS_NAME),
        "supplier": "NOASSERTION",
        "downloadLocation": "NOASSERTION",
        "filesAnalyzed": true,
        "checksums": [sha256_checksum(&initramfs_sha)],
        "primaryPackagePurpose": "ARCHIVE",
        "licenseConcluded": "NOASSERTION",
        "licenseDeclared": "NOASSERTION",
        "copyrightText": "NOASSERTION",
    }));
    rels.push(rel(
        "SPDXRef-Package-firmware",
        "CONTAINS",
        "SPDXRef-Package-initramfs",
    ));
    for (path, sha256, sha1) in initramfs_files(c.initramfs)? {
        let id = ids.make("File-initramfs", &path);
        files.push(file(&id, &format!("./{path}"), &sha256, &sha1));
        rels.push(rel("SPDXRef-Package-initramfs", "CONTAINS", &id));
    }

    // The updater (/init) and the crates linked into it.
    let u = c.updater;
    let mut updater = json!({
        "SPDXID": "SPDXRef-Package-fwpack-updater",
        "name": "fwpack-updater",
        "supplier": "NOASSERTION",
        "downloadLocation": "NOASSERTION",
        "filesAnalyzed": false,
        "checksums": [sha256_checksum(&u.sha256)],
        "primaryPackagePurpose": "APPLICATION",
        "licenseConcluded": "NOASSERTION",
        "licenseDeclared": env!("CARGO_PKG_LICENSE"),
        "copyrightText": "NOASSERTION",
        "comment": format!("/init of the initramfs; source: {}", u.source),
    });
    if let Some(v) = &u.version {
        updater["versionInfo"] = json!(v);
    }
    rels.push(rel(
        "SPDXRef-Package-initramfs",
        "CONTAINS",
        "SPDXRef-Package-fwpack-updater",
    ));
    let crates = updater_crates(
        &c.board.updater.rust_target,
        c.board.updater.tls,
        u.version.as_deref(),
    );
    if crates.is_empty() {
        updater["comment"] = json!(format!(
            "/init of the initramfs; source: {}; its crates are unknown (not this fwpack's version {}, or no lock file when fwpack was built)",
            u.source,
            env!("CARGO_PKG_VERSION")
        ));
    }
    packages.push(updater);
    for k in crates {
        let id = ids.make("Crate", &format!("{}-{}", k.name, k.version));
        let mut p = json!({
            "SPDXID": id,
            "name": k.name,
            "versionInfo": k.version,
            "supplier": "NOASSERTION",
            "downloadLocation": "NOASSERTION",
            "filesAnalyzed": false,
            "primaryPackagePurpose": "LIBRARY",
            "licenseConcluded": "NOASSERTION",
            "licenseDeclared": spdx_licence(k.licence),
            "copyrightText": "NOASSERTION",
        });
        if k.origin == "crates.io" {
            p["downloadLocation"] = json!(format!(
                "https://crates.io/api/v1/crates/{}/{}/download",
                k.name, k.version
            ));
            p["externalRefs"] = json!([{
                "referenceCategory": "PACKAGE-MANAGER",
                "referenceType": "purl",
                "referenceLocator": format!("pkg:cargo/{}@{}", k.name, k.version),
            }]);
        }
        packages.push(p);
        rels.push(rel("SPDXRef-Package-fwpack-updater", "CONTAINS", &id));
    }

    if let Some(rootfs) = c.rootfs {
        let (sha, _) = hash_file(rootfs)?;
        packages.push(json!({
            "SPDXID": "SPDXRef-Package-rootfs",
            "name": "rootfs",
            "supplier": "NOASSERTION",
            "downloadLocation": "NOASSERTION",
            "filesAnalyzed": false,
            "checksums": [sha256_checksum(&sha)],
            "primaryPackagePurpose": "OPERATING-SYSTEM",
            "licenseConcluded": "NOASSERTION",
            "licenseDeclared": "NOASSERTION",
            "copyrightText": "NOASSERTION",
            "comment": "root filesystem image: slot A of sdcard.img and the payload of update.fwi",
        }));
        rels.push(rel(
            "SPDXRef-Package-firmware",
            "CONTAINS",
            "SPDXRef-Package-rootfs",
        ));
    }

    let name = format!("fwpack-{}-{}", c.board.name, c.version);
    let mut doc = json!({
        "spdxVersion": "SPDX-2.3",
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": name,
        "documentNamespace": "",
        "creationInfo": {
            "created": rfc3339(c.created),
            "creators": [format!("Tool: fwpack-{}", env!("CARGO_PKG_VERSION"))],
        },
        "documentDescribes": ["SPDXRef-Package-firmware"],
        "packages": packages,
        "files": files,
        "relationships": rels,
    });
    // Same content, same namespace: it names this SBOM, not this run.
    let digest = Sha256::digest(to_bytes(&doc)?);
    doc["documentNamespace"] = json!(format!(
        "https://spdx.org/spdxdocs/{name}-{}",
        hex::encode(&digest[..16])
    ));
    to_bytes(&doc)
}

struct Crate<'a> {
    name: &'a str,
    version: &'a str,
    licence: &'a str,
    origin: &'a str,
}

/// The crates of the updater for `target`, when the updater in the build
/// is this fwpack's version (otherwise its lock file is not ours).
fn updater_crates<'a>(target: &str, tls: bool, version: Option<&str>) -> Vec<Crate<'a>> {
    if version != Some(env!("CARGO_PKG_VERSION")) {
        return Vec::new();
    }
    let tls = if tls { "1" } else { "0" };
    UPDATER_CRATES
        .lines()
        .filter_map(|l| {
            let f: Vec<&'a str> = l.split('\t').collect();
            match f.as_slice() {
                [t, s, name, version, licence, origin]
                    if *t == target && *s == tls && *name != "fwpack-updater" =>
                {
                    Some(Crate {
                        name,
                        version,
                        licence,
                        origin,
                    })
                }
                _ => None,
            }
        })
        .collect()
}

/// Cargo's licence field is an SPDX expression, except for the old
/// `MIT/Apache-2.0` form.
fn spdx_licence(l: &str) -> String {
    if l.is_empty() {
        "NOASSERTION".into()
    } else {
        l.replace('/', " OR ")
    }
}

/// SPDXIDs: `SPDXRef-<kind>-<name>` with every character SPDX does not
/// allow as `-`; a name that collides after that gets `-2`, `-3`... in
/// the (sorted) order the names come in, so ids are stable.
#[derive(Default)]
struct Ids(BTreeSet<String>);

impl Ids {
    fn make(&mut self, kind: &str, name: &str) -> String {
        let clean: String = name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                    c
                } else {
                    '-'
                }
            })
            .collect();
        let base = format!("SPDXRef-{kind}-{}", clean.trim_matches('-'));
        let mut id = base.clone();
        let mut n = 2;
        while !self.0.insert(id.clone()) {
            id = format!("{base}-{n}");
            n += 1;
        }
        id
    }
}

fn rel(a: &str, kind: &str, b: &str) -> Value {
    json!({"spdxElementId": a, "relationshipType": kind, "relatedSpdxElement": b})
}

fn file(id: &str, name: &str, sha256: &str, sha1: &str) -> Value {
    json!({
        "SPDXID": id,
        "fileName": name,
        "checksums": [
            {"algorithm": "SHA1", "checksumValue": sha1},
            sha256_checksum(sha256),
        ],
    })
}

fn sha256_checksum(hex: &str) -> Value {
    json!({"algorithm": "SHA256", "checksumValue": hex})
}

fn to_bytes(v: &Value) -> Result<Vec<u8>, Error> {
    let mut b = serde_json::to_vec_pretty(v).map_err(|e| Error::Tool {
        tool: "sbom".into(),
        message: e.to_string(),
    })?;
    b.push(b'\n');
    Ok(b)
}

/// Relative paths of the regular files under `dir`, `/`-separated.
fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) -> Result<(), Error> {
    let io = |source| Error::Io {
        path: dir.to_path_buf(),
        source,
    };
    for e in std::fs::read_dir(dir).map_err(io)? {
        let p: PathBuf = e.map_err(io)?.path();
        if p.is_dir() {
            walk(root, &p, out)?;
        } else if let Ok(rel) = p.strip_prefix(root) {
            out.push(rel.to_string_lossy().into_owned());
        }
    }
    Ok(())
}

/// Hashes with both digests SPDX 2.3 wants for a file (SHA-1 is required
/// there; SHA-256 is the one that means something).
#[derive(Default)]
struct Hashes(Sha256, Sha1);

impl Write for Hashes {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.update(b);
        self.1.update(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Hashes {
    fn hex(self) -> (String, String) {
        (
            hex::encode(self.0.finalize()),
            hex::encode(self.1.finalize()),
        )
    }
}

fn hash_file(path: &Path) -> Result<(String, String), Error> {
    let io = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut f = std::fs::File::open(path).map_err(io)?;
    let mut h = Hashes::default();
    std::io::copy(&mut f, &mut h).map_err(io)?;
    Ok(h.hex())
}

/// (path inside the archive without a leading `/`, SHA-256, SHA-1) of
/// every regular file, sorted by path.
fn initramfs_files(archive: &Path) -> Result<Vec<(String, String, String)>, Error> {
    let f = std::fs::File::open(archive).map_err(|source| Error::Io {
        path: archive.to_path_buf(),
        source,
    })?;
    let mut reader = initramfs::Reader::new(std::io::BufReader::new(f))?;
    let mut out = Vec::new();
    while let Some(entry) = reader.next_entry()? {
        if !entry.is_file() {
            continue;
        }
        let mut h = Hashes::default();
        reader.read_data(&mut h)?;
        let (sha256, sha1) = h.hex();
        let name = entry.name.trim_start_matches("./").trim_start_matches('/');
        out.push((name.to_string(), sha256, sha1));
    }
    out.sort();
    Ok(out)
}

/// The kernel's release, where the inputs say it: an x86 bzImage names it
/// in its setup header; otherwise the `lib/modules/<release>` directory
/// or Debian's `usr/lib/linux-image-<release>` DTB directory.
pub fn kernel_release(
    kernel: &Path,
    modules_dir: Option<&Path>,
    dtb_dir: Option<&Path>,
) -> Option<String> {
    if let Some(r) = bzimage_release(kernel) {
        return Some(r);
    }
    let name = |p: &Path| p.file_name().map(|n| n.to_string_lossy().into_owned());
    modules_dir.and_then(name).or_else(|| {
        dtb_dir
            .and_then(name)
            .and_then(|n| n.strip_prefix("linux-image-").map(str::to_string))
    })
}

/// Linux boot protocol: "HdrS" at 0x202, the version string's offset
/// (minus 0x200) at 0x20E; the release is its first word.
fn bzimage_release(kernel: &Path) -> Option<String> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(kernel).ok()?;
    let mut hdr = [0u8; 0x210];
    f.read_exact(&mut hdr).ok()?;
    if hdr.get(0x202..0x206)? != b"HdrS" {
        return None;
    }
    let off = u64::from(u16::from_le_bytes([*hdr.get(0x20E)?, *hdr.get(0x20F)?])) + 0x200;
    f.seek(SeekFrom::Start(off)).ok()?;
    let mut s = [0u8; 128];
    let n = f.read(&mut s).ok()?;
    let text = s.get(..n)?;
    let end = text.iter().position(|&b| b == 0 || b == b' ')?;
    let r = std::str::from_utf8(text.get(..end)?).ok()?;
    (!r.is_empty() && r.chars().all(|c| c.is_ascii_graphic())).then(|| r.to_string())
}

/// `YYYY-MM-DDThh:mm:ssZ` (SPDX's `created`) from Unix seconds.
pub fn rfc3339(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's days-to-civil, for the proleptic Gregorian calendar.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_matches_known_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(951_825_600), "2000-02-29T12:00:00Z");
    }

    #[test]
    fn ids_are_clean_and_unique() {
        let mut ids = Ids::default();
        assert_eq!(ids.make("File-boot", "a_b"), "SPDXRef-File-boot-a-b");
        assert_eq!(ids.make("File-boot", "a/b"), "SPDXRef-File-boot-a-b-2");
        assert_eq!(
            ids.make("Crate", "sha2-0.10.9"),
            "SPDXRef-Crate-sha2-0.10.9"
        );
    }

    #[test]
    fn the_shipped_targets_have_crate_lists() {
        // Fails when build.rs could not ask cargo: then release SBOMs
        // would silently lose the updater's crates.
        for t in [
            "aarch64-unknown-linux-musl",
            "x86_64-unknown-linux-musl",
            "riscv64gc-unknown-linux-gnu",
        ] {
            let crates = updater_crates(t, false, Some(env!("CARGO_PKG_VERSION")));
            assert!(crates.iter().any(|k| k.name == "fwimage"), "{t}");
            assert!(crates
                .iter()
                .any(|k| k.name == "sha2" && k.origin == "crates.io"));
            assert!(
                !crates.iter().any(|k| k.name == "syn"),
                "proc-macro deps are not linked"
            );
            assert!(updater_crates(t, false, Some("0.0.0-other")).is_empty());
        }
    }
}
