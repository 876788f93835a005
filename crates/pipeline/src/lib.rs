//! `fwpack build`: from a board config and its inputs to bootable,
//! reproducible artifacts.
//!
//! Order matters and is the point of this crate: everything that can be
//! refused (bad config, missing kernel, a dynamic binary, an initramfs over
//! the RAM budget) is checked before the first artifact is written, and
//! artifacts are assembled in a staging directory that replaces the output
//! directory's contents only when all of them exist. A failed build never
//! leaves a complete-looking `sdcard.img` or `manifest.json` behind.

mod bootfiles;
pub mod flash;
pub mod sbom;
mod slotkernel;
mod updater_build;
mod updater_source;

use std::path::{Path, PathBuf};

use board::Board;
use serde::Serialize;
use sha2::{Digest, Sha256};

pub use bootfiles::{
    autoboot_txt, cmdline, config_txt, extlinux_conf, EXTLINUX_CONF, EXTLINUX_DTB_DIR,
};
pub use updater_build::{cargo_command as updater_cargo_command, Flavor};
pub use updater_source::{version_in, Updater, UpdaterInfo, SHIPPED_BOOTSTRAP, VERSION_MARK};

/// The initramfs recipe fwpack ships, compiled in like the board configs
/// so that a release binary needs no source tree; `--recipe` replaces it.
pub const SHIPPED_RECIPE: &str = include_str!("../../../recipes/updater-initramfs.yaml");
/// How messages name [`SHIPPED_RECIPE`].
pub const SHIPPED_RECIPE_NAME: &str = "(built in)/recipes/updater-initramfs.yaml";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{tool} failed: {message}")]
    Tool { tool: String, message: String },
    #[error("missing input: {0}")]
    MissingInput(String),
    #[error("ELF check failed")]
    Elf(#[from] elfcheck::Error),
    #[error(transparent)]
    Image(#[from] fwimage::Error),
    #[error(transparent)]
    Initramfs(#[from] initramfs::Error),
    #[error(transparent)]
    Disk(#[from] diskimage::Error),
    #[error(transparent)]
    State(#[from] updater::Error),
    #[error("initramfs is {size} bytes unpacked, over the board's RAM budget of {budget} bytes ({board})")]
    OverBudget {
        board: String,
        size: u64,
        budget: u64,
    },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Progress for the CLI to render (human lines or JSON).
#[derive(Clone, Debug, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    Step { step: &'static str, detail: String },
    Warning { message: String },
}

/// One file in `manifest.json`.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Artifact {
    pub path: String,
    pub size: u64,
    pub sha256: String,
}

pub fn sha256_file(path: &Path) -> Result<(u64, String), Error> {
    let mut f = std::fs::File::open(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let mut h = Sha256::new();
    let size = std::io::copy(&mut f, &mut h).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    Ok((size, hex::encode(h.finalize())))
}

/// Builds (with [`Updater::Build`]) or takes the updater of `flavor` and
/// checks it against the board's ELF policy. Nothing is emitted when a
/// check fails.
pub fn checked_updater(
    board: &Board,
    updater: &Updater,
    flavor: Flavor,
    on: &mut dyn FnMut(Event),
) -> Result<(PathBuf, UpdaterInfo), Error> {
    let (bin, source) = updater_source::resolve(board, updater, flavor, on)?;
    check_elves(board, std::slice::from_ref(&bin), on)?;
    let info = updater_source::describe(&bin, source)?;
    on(Event::Step {
        step: "updater",
        detail: format!(
            "{} {} {} (version {}, sha256 {})",
            flavor.name(),
            info.source,
            info.path.display(),
            info.version.as_deref().unwrap_or("unknown"),
            info.sha256.get(..16).unwrap_or_default()
        ),
    });
    Ok((bin, info))
}

/// Checks every device binary against the board's policy; all findings of
/// all files end up in the one error.
pub fn check_elves(
    board: &Board,
    files: &[PathBuf],
    on: &mut dyn FnMut(Event),
) -> Result<(), Error> {
    let policy = elf_policy(board)?;
    announce_elf_check(board, files.len(), on);
    let reports = elfcheck::check_files(files, &policy)?;
    pass_or_refuse(&reports, on)
}

fn elf_policy(board: &Board) -> Result<elfcheck::Policy, Error> {
    Ok(elfcheck::Policy {
        machine: Some(board.updater.machine.parse().map_err(
            |e: elfcheck::ParseMachineError| Error::Tool {
                tool: "board config".into(),
                message: e.0,
            },
        )?),
        size_budget: Some(board.updater.size_budget),
        require_stripped: board.updater.require_stripped,
        require_static: true,
    })
}

fn announce_elf_check(board: &Board, count: usize, on: &mut dyn FnMut(Event)) {
    on(Event::Step {
        step: "check-elf",
        detail: format!("{count} file(s) against {} policy", board.updater.machine),
    });
}

/// Warnings become events; any error refuses the whole batch.
fn pass_or_refuse(reports: &[elfcheck::Report], on: &mut dyn FnMut(Event)) -> Result<(), Error> {
    for r in reports {
        for w in r.warnings() {
            on(Event::Warning {
                message: format!("{}: {}", r.display_name(), w.message),
            });
        }
    }
    elfcheck::require_pass(reports)?;
    Ok(())
}

/// Everything `build` needs besides the board.
pub struct Inputs {
    pub out_dir: PathBuf,
    /// The initramfs recipe; `None`: [`SHIPPED_RECIPE`].
    pub recipe: Option<PathBuf>,
    pub kernel: PathBuf,
    pub dtb_dir: Option<PathBuf>,
    pub firmware_dir: Option<PathBuf>,
    /// `lib/modules/<release>` of the kernel, when the board loads modules.
    pub modules_dir: Option<PathBuf>,
    /// Root filesystem image: slot A of `sdcard.img` and `update.fwi`.
    pub rootfs: Option<PathBuf>,
    /// The static device updater (`/init`).
    pub updater: Updater,
    pub signer: Box<dyn fwimage::Signer>,
    /// Update images (`.fwi`) carried in the initramfs under `/images`,
    /// which the updater applies at boot.
    pub include_images: Vec<PathBuf>,
    pub payload_version: u64,
    pub version_label: String,
    /// Threads compressing the initramfs and `update.fwi` (at least 1); the
    /// artifacts are byte-identical for any number.
    pub jobs: usize,
    /// Put the SBOM's SHA-256 in `update.fwi`'s signed head. Off only for
    /// fleets whose updaters predate the head extension: they refuse
    /// images that carry it (docs/FORMAT.md, "Head extension").
    pub sbom_record: bool,
    /// Store all-zero chunks of update.fwi empty (docs/FORMAT.md, "Zero
    /// chunks"). Off only for fleets whose updaters predate incompat bit
    /// 2: they refuse images that have such chunks.
    pub zero_chunks: bool,
}

/// What `build` produced (also written as `manifest.json`).
#[derive(Clone, Debug, Serialize)]
pub struct Manifest {
    pub board: String,
    pub compatible: String,
    pub version: u64,
    pub label: String,
    pub key_id: String,
    /// The updater in the initramfs: where it came from, its hash, version.
    pub updater: UpdaterInfo,
    /// `boot: kexec` boards: the updater offered to the slot as
    /// `/usr/bin/fwpack-updater` (with the network client; a root
    /// filesystem that has its own keeps it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slot_updater: Option<UpdaterInfo>,
    /// The SBOM (SPDX 2.3 JSON) of what went on the device, relative to the
    /// output directory; its SHA-256 is also in update.fwi's signed head
    /// unless the build was asked to leave it out (`Inputs::sbom_record`).
    pub sbom: String,
    pub sbom_sha256: String,
    pub artifacts: Vec<Artifact>,
}

pub const INITRAMFS_NAME: &str = "initramfs.cpio.gz";

/// Runs the whole pipeline. See the crate docs for the ordering rules.
pub fn build(board: &Board, inputs: &Inputs, on: &mut dyn FnMut(Event)) -> Result<Manifest, Error> {
    let plan = preflight(board, inputs)?;
    let (updater, updater_info) = checked_updater(board, &inputs.updater, Flavor::Bootstrap, on)?;

    let parent = match inputs.out_dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent).map_err(|source| Error::Io {
        path: parent.clone(),
        source,
    })?;
    // The staging directory becomes `--out`: 0777 minus the umask like any
    // mkdir, not tempfile's 0700, or a web server cannot serve update.fwi.
    let staging = tempfile::Builder::new()
        .prefix(".fwpack-build-")
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o777))
        .tempdir_in(&parent)
        .map_err(|source| Error::Io {
            path: parent.clone(),
            source,
        })?;
    let stage = staging.path();
    let boot_dir = stage.join("boot");
    mkdir(&boot_dir)?;

    let public = inputs.signer.public_key();
    let key_id = fwimage::KeyId::of(&public);

    // 0. kexec boards: the slot's root filesystem carries its kernel.
    // Intermediate files stay out of the staged output.
    let scratch = tempfile::Builder::new()
        .prefix(".fwpack-slot-")
        .tempdir_in(&parent)
        .map_err(|source| Error::Io {
            path: parent.clone(),
            source,
        })?;
    let mut slot_updater_info = None;
    let rootfs = match (&inputs.rootfs, board.boot) {
        (Some(r), board::SlotBoot::Kexec) => {
            let (slot_updater, info) = checked_updater(board, &inputs.updater, Flavor::Slot, on)?;
            slot_updater_info = Some(info);
            on(Event::Step {
                step: "slot-kernel",
                detail: format!(
                    "{} + kernel, cmdline, initrd{} -> {}",
                    r.display(),
                    if plan.dtbs.is_empty() { "" } else { ", dtb" },
                    slotkernel::DIR
                ),
            });
            Some(slot_rootfs(
                board,
                inputs,
                &plan,
                (&updater, &slot_updater),
                &public,
                r,
                scratch.path(),
            )?)
        }
        (r, _) => r.clone(),
    };

    // 1. The initramfs, then every ELF in it is checked as it will land.
    on(Event::Step {
        step: "initramfs",
        detail: inputs
            .recipe
            .as_deref()
            .unwrap_or(Path::new(SHIPPED_RECIPE_NAME))
            .display()
            .to_string(),
    });
    let initramfs_path = boot_dir.join(INITRAMFS_NAME);
    let summary = pack_initramfs(board, inputs, &updater, &public, &initramfs_path, true)?;
    let budget = board.ram.initramfs_budget_mib * 1024 * 1024;
    if summary.uncompressed_bytes > budget {
        return Err(Error::OverBudget {
            board: board.name.clone(),
            size: summary.uncompressed_bytes,
            budget,
        });
    }
    check_archive_elves(board, &initramfs_path, on)?;

    // 2. Boot files.
    on(Event::Step {
        step: "boot-files",
        detail: format!("{}", boot_dir.display()),
    });
    copy(&inputs.kernel, &boot_dir.join(&board.kernel.image_name))?;
    for (src, name) in &plan.dtbs {
        copy(src, &boot_dir.join(name))?;
    }
    for src in &plan.firmware {
        if let Some(name) = src.file_name() {
            copy(src, &boot_dir.join(name))?;
        }
    }
    let first_dtb = plan.dtbs.first().map(|(_, n)| n.as_str());
    if bootfiles::wants_config_txt(board) {
        write(
            &boot_dir.join("config.txt"),
            config_txt(board, INITRAMFS_NAME, first_dtb).as_bytes(),
        )?;
    }
    if board.boot_files.cmdline_txt {
        write(
            &boot_dir.join("cmdline.txt"),
            (cmdline(board) + "\n").as_bytes(),
        )?;
    }
    if board.boot_files.tryboot {
        write(&boot_dir.join("autoboot.txt"), autoboot_txt().as_bytes())?;
    }
    // UEFI A/B: the bootstrap partition, for the disk and for update.fwi.
    let bootstrap = if board.kernel.boot == board::KernelBoot::EfiAb {
        let fat = scratch.path().join("bootstrap.fat");
        disk::bootstrap_fat(board, &boot_dir, &fat)?;
        Some(fat)
    } else {
        None
    };
    if bootfiles::wants_extlinux(board) {
        let conf = boot_dir.join(EXTLINUX_CONF);
        if let Some(dir) = conf.parent() {
            mkdir(dir)?;
        }
        let text = extlinux_conf(board, INITRAMFS_NAME, !plan.dtbs.is_empty());
        write(&conf, text.as_bytes())?;
    }

    // 3. The SBOM of all of the above, then the signed update image that
    // names it (so the SBOM cannot describe update.fwi itself).
    on(Event::Step {
        step: "sbom",
        detail: sbom::SBOM_NAME.into(),
    });
    let sbom_bytes = sbom::document(&sbom::Contents {
        board,
        version: if inputs.version_label.is_empty() {
            inputs.payload_version.to_string()
        } else {
            inputs.version_label.clone()
        },
        boot_dir: &boot_dir,
        kernel_name: &board.kernel.image_name,
        kernel_release: sbom::kernel_release(
            &inputs.kernel,
            inputs.modules_dir.as_deref(),
            inputs.dtb_dir.as_deref(),
        ),
        initramfs: &initramfs_path,
        updater: &updater_info,
        rootfs: rootfs.as_deref(),
        created: created_epoch(),
    })?;
    let sbom_sha256: [u8; 32] = Sha256::digest(&sbom_bytes).into();
    write(&stage.join(sbom::SBOM_NAME), &sbom_bytes)?;
    if let Some(rootfs) = &rootfs {
        on(Event::Step {
            step: "stamp",
            detail: format!("{} -> update.fwi (system)", rootfs.display()),
        });
        stamp(
            board,
            inputs,
            rootfs,
            bootstrap.as_deref(),
            sbom_sha256,
            &stage.join("update.fwi"),
        )?;
    } else {
        on(Event::Warning {
            message: "no --rootfs: sdcard.img gets empty slots and no update.fwi is written".into(),
        });
    }

    // 4. The disk image.
    on(Event::Step {
        step: "disk",
        detail: "sdcard.img".into(),
    });
    disk::write(
        board,
        inputs,
        rootfs.as_deref(),
        &boot_dir,
        bootstrap.as_deref(),
        &stage.join("sdcard.img"),
    )?;
    on(Event::Step {
        step: "flash",
        detail: "sdcard.img.bmap, sdcard.img.zst".into(),
    });
    flash::write_zst(&stage.join("sdcard.img"))?;

    // 5. Manifest, then the staged directory replaces the output.
    let mut artifacts = Vec::new();
    collect_artifacts(stage, stage, &mut artifacts)?;
    artifacts.sort_by(|a, b| a.path.cmp(&b.path));
    let manifest = Manifest {
        board: board.name.clone(),
        compatible: board.compatible().to_string(),
        version: inputs.payload_version,
        label: inputs.version_label.clone(),
        key_id: key_id.full(),
        updater: updater_info,
        slot_updater: slot_updater_info,
        sbom: sbom::SBOM_NAME.into(),
        sbom_sha256: hex::encode(sbom_sha256),
        artifacts,
    };
    let json = serde_json::to_vec_pretty(&manifest).map_err(|e| Error::Tool {
        tool: "manifest".into(),
        message: e.to_string(),
    })?;
    write(&stage.join("manifest.json"), &json)?;
    publish(staging, &inputs.out_dir)?;
    Ok(manifest)
}

struct Plan {
    dtbs: Vec<(PathBuf, String)>,
    firmware: Vec<PathBuf>,
}

/// Every input is checked before anything is built or written.
fn preflight(board: &Board, inputs: &Inputs) -> Result<Plan, Error> {
    // A FIFO or device is named for what it is: reading one would block,
    // never end, or look like a truncated file.
    let must_exist = |p: &Path, what: &str| match std::fs::metadata(p) {
        Ok(m) if m.is_file() => Ok(()),
        Ok(m) => Err(Error::MissingInput(format!(
            "{what} {} is {}, not a regular file",
            p.display(),
            file_kind(&m)
        ))),
        Err(_) => Err(Error::MissingInput(format!(
            "{what} {} does not exist",
            p.display()
        ))),
    };
    must_exist(&inputs.kernel, "kernel")?;
    if let Some(r) = &inputs.recipe {
        must_exist(r, "recipe")?;
    }
    if let Some(r) = &inputs.rootfs {
        must_exist(r, "rootfs")?;
    }
    if let Updater::File(u) | Updater::Shipped(u) = &inputs.updater {
        must_exist(u, "updater")?;
    }
    for img in &inputs.include_images {
        must_exist(img, "update image")?;
    }
    if !board.initramfs_modules().is_empty() {
        match &inputs.modules_dir {
            Some(d) if d.join("kernel").is_dir() => {}
            Some(d) => {
                return Err(Error::MissingInput(format!(
                    "{} has no kernel/ directory (expected lib/modules/<release>)",
                    d.display()
                )))
            }
            None => {
                return Err(Error::MissingInput(format!(
                    "board {} loads kernel modules ({}): pass --modules-dir",
                    board.name,
                    board.initramfs_modules().join(", ")
                )))
            }
        }
    }
    let mut dtbs = Vec::new();
    for alternatives in &board.kernel.dtbs {
        let dir = inputs.dtb_dir.as_ref().ok_or_else(|| {
            Error::MissingInput(format!("board {} needs a DTB: pass --dtb-dir", board.name))
        })?;
        let found = alternatives
            .iter()
            .map(|d| (dir.join(d), d))
            .find(|(p, _)| p.is_file());
        match found {
            // extlinux's fdtdir needs the vendor/ directory kept.
            Some((p, rel)) if bootfiles::wants_extlinux(board) => {
                dtbs.push((p, format!("{EXTLINUX_DTB_DIR}/{rel}")));
            }
            Some((p, _)) => {
                let name = p
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                dtbs.push((p, name));
            }
            None => {
                return Err(Error::MissingInput(format!(
                    "none of the DTBs {} under {}",
                    alternatives.join(", "),
                    dir.display()
                )))
            }
        }
    }
    let mut firmware = Vec::new();
    if !board.boot_files.firmware.is_empty() {
        let dir = inputs.firmware_dir.as_ref().ok_or_else(|| {
            Error::MissingInput(format!(
                "board {} boots through GPU firmware ({}): pass --firmware-dir",
                board.name,
                board.boot_files.firmware.join(", ")
            ))
        })?;
        for f in &board.boot_files.firmware {
            let p = dir.join(f);
            must_exist(&p, "firmware file")?;
            firmware.push(p);
        }
    }
    Ok(Plan { dtbs, firmware })
}

/// SOURCE_DATE_EPOCH when set (as the image's `created`), else the clock.
fn created_epoch() -> u64 {
    std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0)
        })
}

fn stamp(
    board: &Board,
    inputs: &Inputs,
    rootfs: &Path,
    bootstrap: Option<&Path>,
    sbom_sha256: [u8; 32],
    out: &Path,
) -> Result<(), Error> {
    let mut b = fwimage::ImageBuilder::new(board.compatible(), inputs.payload_version)?
        .version_label(&inputs.version_label)?
        .jobs(inputs.jobs)
        .zero_chunks(inputs.zero_chunks);
    if inputs.sbom_record {
        b = b.sbom_sha256(sbom_sha256);
    }
    // Signed like the rest, written to the inactive bootstrap partition.
    if let Some(fat) = bootstrap {
        let len = board.disk.boot_mib * 1024 * 1024;
        add_file_segment(&mut b, "bootstrap", disk::BOOTSTRAP_GROUP, fat, Some(len))?;
    }
    add_file_segment(&mut b, "rootfs", SYSTEM_GROUP, rootfs, None)?;
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(out)
        .map_err(|source| Error::Io {
            path: out.to_path_buf(),
            source,
        })?;
    b.write(&mut file, &mut |_| {})?;
    fwimage::insert_signature(&mut file, inputs.signer.as_ref())?;
    Ok(())
}

/// Adds `path` as a zstd segment for slot group `group`: `len` bytes of
/// it, or the whole file.
fn add_file_segment<'a>(
    b: &mut fwimage::ImageBuilder<'a>,
    name: &str,
    group: &str,
    path: &Path,
    len: Option<u64>,
) -> Result<(), Error> {
    let io = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    let f = std::fs::File::open(path).map_err(io)?;
    let len = match len {
        Some(l) => l,
        None => f.metadata().map_err(io)?.len(),
    };
    b.add_segment(
        fwimage::SegmentSpec {
            name: name.into(),
            target: group.into(),
            target_offset: 0,
            compression: fwimage::Compression::Zstd,
            level: None,
        },
        len,
        std::io::BufReader::with_capacity(1 << 20, f),
    )?;
    Ok(())
}

/// The slot group the root filesystem goes to, in images and on disk.
pub const SYSTEM_GROUP: &str = "system";

/// The slot root filesystem of a kexec board: `rootfs` plus the kernel,
/// its command line (the board's, without the bootstrap's nr_cpus=1; the
/// updater appends root=, panic= and fwpack.slot=), the first DTB and an
/// initrd, and `slot_updater` as `/usr/bin/fwpack-updater` unless the root
/// filesystem has one. The initrd is the fwpack
/// initramfs (with `updater`, the bootstrap's) without update images: booted with `fwpack.slot=` it loads
/// the board's modules and switches root into that slot (its slot stage),
/// so slot kernels with modular disk drivers and slots without a
/// partition of their own boot the same way.
fn slot_rootfs(
    board: &Board,
    inputs: &Inputs,
    plan: &Plan,
    (updater, slot_updater): (&Path, &Path),
    public: &ed25519_dalek::VerifyingKey,
    rootfs: &Path,
    scratch: &Path,
) -> Result<PathBuf, Error> {
    let initrd = scratch.join("initrd");
    pack_initramfs(board, inputs, updater, public, &initrd, false)?;
    let cmdline_file = scratch.join("cmdline");
    write(
        &cmdline_file,
        (bootfiles::slot_cmdline(board) + "\n").as_bytes(),
    )?;
    let mut files: Vec<(&str, &Path)> = vec![
        ("kernel", &inputs.kernel),
        ("cmdline", &cmdline_file),
        ("initrd", &initrd),
    ];
    if let Some((dtb, _)) = plan.dtbs.first() {
        files.push(("dtb", dtb));
    }
    let out = scratch.join("rootfs.ext4");
    slotkernel::inject(rootfs, &out, &files, Some(slot_updater))?;
    Ok(out)
}

fn pack_initramfs(
    board: &Board,
    inputs: &Inputs,
    updater: &Path,
    public: &ed25519_dalek::VerifyingKey,
    out: &Path,
    with_images: bool,
) -> Result<initramfs::Summary, Error> {
    use ed25519_dalek::pkcs8::{spki::der::pem::LineEnding, EncodePublicKey};
    let mut vars = initramfs::Vars::new();
    // Absolute: the shipped recipe has no directory to resolve against.
    let absolute = |p: &Path| {
        std::path::absolute(p).map_err(|source| Error::Io {
            path: p.to_path_buf(),
            source,
        })
    };
    vars.set("UPDATER", absolute(updater)?.display().to_string());
    vars.set("MODULES", board.initramfs_modules().join(" "));
    if let Some(d) = &inputs.modules_dir {
        vars.set("KERNEL_MODULES", absolute(d)?.display().to_string());
    }
    let recipe = match &inputs.recipe {
        Some(path) => initramfs::Recipe::load(path, &vars)?,
        None => initramfs::Recipe::parse(SHIPPED_RECIPE, Path::new(SHIPPED_RECIPE_NAME), &vars)?,
    };
    let options = initramfs::Options::from_env()?;
    let (mut builder, _modules) = recipe.build(options)?;
    builder.jobs(inputs.jobs);
    let meta = initramfs::Meta::mode(0o644);
    builder.add_bytes("/etc/fwpack/updater.conf", updater_conf(board), meta)?;
    let pem = public
        .to_public_key_pem(LineEnding::LF)
        .map_err(|e| Error::Tool {
            tool: "public key".into(),
            message: e.to_string(),
        })?;
    builder.add_bytes("/etc/fwpack/keys/release.pub.pem", pem.into_bytes(), meta)?;
    let images: &[PathBuf] = if with_images {
        &inputs.include_images
    } else {
        &[]
    };
    for img in images {
        let name = img
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .ok_or_else(|| Error::MissingInput(format!("{} is not a file", img.display())))?;
        builder.add_file(&format!("/images/{name}"), img, Some(meta))?;
    }
    Ok(builder.write_file(out, initramfs::Compression::Gzip { level: 9 })?)
}

/// The updater's configuration file (format in docs/FORMAT.md).
pub fn updater_conf(board: &Board) -> String {
    let mut s = String::new();
    s.push_str(&format!("# Generated by fwpack build for {}\n", board.name));
    s.push_str(&format!("board = {}\n", board.compatible()));
    s.push_str(&format!("target = {}\n", board.disk.device));
    s.push_str(&format!("state_offset = {}\n", board.disk.state_offset));
    s.push_str(&format!(
        "state_copy_distance = {}\n",
        board.disk.state_copy_distance
    ));
    s.push_str("keys = /etc/fwpack/keys\n");
    s.push_str("images = /images\n");
    if !board.initramfs_modules().is_empty() {
        s.push_str("modules = /etc/fwpack/modules.load\n");
    }
    s.push_str(&format!("tries = {}\n", board.disk.tries));
    s.push_str("root_fstype = ext4\n");
    s.push_str(&format!("boot = {}\n", board.boot.name()));
    if board.boot == board::SlotBoot::Kexec {
        s.push_str(&format!("kexec_dtb = {}\n", board.kexec_dtb.name()));
    }
    if board.kernel.boot == board::KernelBoot::EfiAb {
        let [a, b] = disk::EFI_BOOT_ENTRIES;
        s.push_str(&format!("efi_boot_entries = {a:04X} {b:04X}\n"));
    }
    s.push_str(&format!(
        "fallback_below_floor = {}\n",
        board.fallback_below_floor.name()
    ));
    if let Some(w) = &board.watchdog {
        s.push_str(&format!(
            "watchdog = {}\nwatchdog_timeout = {}\n",
            w.device, w.timeout_s
        ));
    }
    s.push_str(&format!("console = /dev/{}\n", board.console.device));
    if !board.updater.cmdline_overrides.is_empty() {
        s.push_str(&format!(
            "cmdline_overrides = {}\n",
            board.updater.cmdline_overrides.join(" ")
        ));
    }
    s
}

/// Checks every executable ELF inside the archive, as written: a dynamic
/// binary slipped into a recipe stops the build here. Kernel modules
/// (ELF relocatables) are the kernel's business, not this policy's.
/// Entries are checked in memory and reported under their archive path.
fn check_archive_elves(
    board: &Board,
    archive: &Path,
    on: &mut dyn FnMut(Event),
) -> Result<(), Error> {
    let policy = elf_policy(board)?;
    let f = std::fs::File::open(archive).map_err(|source| Error::Io {
        path: archive.to_path_buf(),
        source,
    })?;
    let mut reader = initramfs::Reader::new(std::io::BufReader::new(f))?;
    let mut reports = Vec::new();
    while let Some(entry) = reader.next_entry()? {
        if !entry.is_file() {
            continue;
        }
        let mut data = Vec::new();
        reader.read_data(&mut data)?;
        let is_exec_elf = data.len() > 18 && data[..4] == *b"\x7fELF" && data[16] != 1;
        if is_exec_elf {
            let mut report = elfcheck::check_bytes(&data, &policy);
            report.path = Some(Path::new("/").join(entry.name.trim_start_matches('/')));
            reports.push(report);
        }
    }
    announce_elf_check(board, reports.len(), on);
    pass_or_refuse(&reports, on)
}

mod disk;

fn collect_artifacts(root: &Path, dir: &Path, out: &mut Vec<Artifact>) -> Result<(), Error> {
    let rd = std::fs::read_dir(dir).map_err(|source| Error::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    for e in rd {
        let e = e.map_err(|source| Error::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let p = e.path();
        if p.is_dir() {
            collect_artifacts(root, &p, out)?;
        } else {
            let (size, sha256) = sha256_file(&p)?;
            let rel = p
                .strip_prefix(root)
                .unwrap_or(&p)
                .to_string_lossy()
                .into_owned();
            out.push(Artifact {
                path: rel,
                size,
                sha256,
            });
        }
    }
    Ok(())
}

/// Moves the staged build into place: the old output directory is renamed
/// away first, so at every moment `out` is either the old complete build,
/// absent, or the new complete build.
fn publish(staging: tempfile::TempDir, out: &Path) -> Result<(), Error> {
    let io = |source| Error::Io {
        path: out.to_path_buf(),
        source,
    };
    let old = out.with_extension("old-fwpack");
    if out.exists() {
        let _ = std::fs::remove_dir_all(&old);
        std::fs::rename(out, &old).map_err(io)?;
    }
    let path = staging.keep();
    std::fs::rename(&path, out).map_err(io)?;
    let _ = std::fs::remove_dir_all(&old);
    Ok(())
}

fn file_kind(m: &std::fs::Metadata) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    let t = m.file_type();
    if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else {
        "not a file"
    }
}

fn mkdir(p: &Path) -> Result<(), Error> {
    std::fs::create_dir_all(p).map_err(|source| Error::Io {
        path: p.to_path_buf(),
        source,
    })
}

fn copy(from: &Path, to: &Path) -> Result<(), Error> {
    if let Some(parent) = to.parent() {
        mkdir(parent)?;
    }
    std::fs::copy(from, to)
        .map(drop)
        .map_err(|source| Error::Io {
            path: from.to_path_buf(),
            source,
        })
}

fn write(p: &Path, data: &[u8]) -> Result<(), Error> {
    std::fs::write(p, data).map_err(|source| Error::Io {
        path: p.to_path_buf(),
        source,
    })
}
