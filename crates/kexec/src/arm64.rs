//! arm64: kexec_load with our own segments (Image, DTB, initrd) and a
//! purgatory that enters the kernel with the DTB address in x0.
//!
//! Debian's arm64 kernels have CONFIG_KEXEC but not CONFIG_KEXEC_FILE, so
//! the kernel does not parse anything for us: we place the `Image` as
//! Documentation/arm64/booting.rst asks (2 MiB aligned base plus
//! text_offset, image_size bytes free), write a DTB whose /chosen carries
//! the new command line and initrd, and enter through a purgatory of six
//! instructions, because the kernel's relocate code jumps to the entry
//! point with x0 = 0 and booting.rst wants x0 = DTB, x1..x3 = 0.
//!
//! Everything but the syscall is pure and tested on any host: [`prepare`]
//! turns file contents, /proc/iomem and random seeds into segments.

use crate::fdt::{Fdt, Node};
use crate::{BootSpec, Error, Method, Result};

/// `KEXEC_ARCH_AARCH64` (EM_AARCH64 << 16): the kernel refuses segments
/// meant for another architecture's kernel.
pub const KEXEC_ARCH_AARCH64: u64 = 183 << 16;
/// Segment placement and size granule: a multiple of every arm64 page
/// size (4, 16, 64 KiB), so it fits whatever the running kernel uses.
pub const SEGMENT_ALIGN: u64 = 64 << 10;
const KERNEL_ALIGN: u64 = 2 << 20;
/// booting.rst: the DTB must not exceed 2 MiB.
const DTB_MAX: usize = 2 << 20;
/// arm64 COMMAND_LINE_SIZE, terminator included.
const CMDLINE_MAX: usize = 2048;
/// booting.rst: kernel and initrd within one 1 GiB aligned window of up
/// to 32 GiB.
const WINDOW: u64 = 32 << 30;
/// As the kernel's own kexec_file_load does (drivers/of/kexec.c).
const RNG_SEED_LEN: usize = 128;
const ARM64_MAGIC: u32 = 0x644d_5241; // "ARM\x64"

/// What the `Image` header says (booting.rst, "Header notes").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ImageHeader {
    pub text_offset: u64,
    pub image_size: u64,
    pub flags: u64,
}

fn le64(b: &[u8], at: usize) -> Option<u64> {
    let s = b.get(at..at + 8)?;
    let mut a = [0u8; 8];
    a.copy_from_slice(s);
    Some(u64::from_le_bytes(a))
}

/// Parses the 64-byte arm64 `Image` header.
pub fn parse_image(b: &[u8]) -> std::result::Result<ImageHeader, String> {
    if b.starts_with(&[0x1f, 0x8b]) {
        return Err("gzip-compressed; give the plain Image (vmlinuz decompressed)".into());
    }
    if b.len() < 64 {
        return Err(format!(
            "{} bytes, shorter than the 64-byte header",
            b.len()
        ));
    }
    let magic = u32::from_le_bytes([b[56], b[57], b[58], b[59]]);
    if magic != ARM64_MAGIC {
        return Err("no ARM\\x64 magic at byte 56 (not an arm64 Image)".into());
    }
    let (Some(text_offset), Some(image_size), Some(flags)) = (le64(b, 8), le64(b, 16), le64(b, 24))
    else {
        return Err("truncated header".into());
    };
    // image_size 0 means a pre-3.17 kernel with no usable header fields.
    if image_size == 0 {
        return Err("image_size is 0 (kernel older than 3.17 is not supported)".into());
    }
    if flags & 1 != 0 {
        return Err("big-endian kernel".into());
    }
    if !text_offset.is_multiple_of(SEGMENT_ALIGN) || text_offset >= KERNEL_ALIGN {
        return Err(format!(
            "text_offset {text_offset:#x} is not page aligned within 2 MiB"
        ));
    }
    if (b.len() as u64) > image_size {
        return Err(format!(
            "file is {} bytes but image_size says {image_size}",
            b.len()
        ));
    }
    Ok(ImageHeader {
        text_offset,
        image_size,
        flags,
    })
}

/// A physical address range, end exclusive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Range {
    pub start: u64,
    pub end: u64,
}

/// System RAM from /proc/iomem minus everything marked reserved (memory
/// the firmware or the DTB's reservations keep, which the next kernel will
/// not know we overwrote) and the crash kernel area. Sorted, disjoint.
pub fn free_ram(iomem: &str) -> std::result::Result<Vec<Range>, String> {
    let mut ram = Vec::new();
    let mut holes = Vec::new();
    for line in iomem.lines() {
        let Some((span, name)) = line.trim().split_once(" : ") else {
            continue;
        };
        let Some((a, b)) = span.split_once('-') else {
            continue;
        };
        let (Ok(a), Ok(b)) = (u64::from_str_radix(a, 16), u64::from_str_radix(b, 16)) else {
            return Err(format!("unreadable line {line:?}"));
        };
        let Some(end) = b.checked_add(1).filter(|&e| e > a) else {
            continue;
        };
        let r = Range { start: a, end };
        match name.trim() {
            "System RAM" => ram.push(r),
            "reserved" | "Crash kernel" => holes.push(r),
            _ => {}
        }
    }
    if ram.iter().all(|r| r.start == 0 && r.end == 1) || ram.is_empty() {
        return Err("no System RAM in /proc/iomem (addresses read as 0 without root)".into());
    }
    ram.sort_by_key(|r| r.start);
    let mut free: Vec<Range> = Vec::new();
    for r in ram {
        let mut pieces = vec![r];
        for h in &holes {
            pieces = pieces
                .into_iter()
                .flat_map(|p| {
                    let mut out = Vec::new();
                    if h.end <= p.start || h.start >= p.end {
                        out.push(p);
                    } else {
                        if h.start > p.start {
                            out.push(Range {
                                start: p.start,
                                end: h.start,
                            });
                        }
                        if h.end < p.end {
                            out.push(Range {
                                start: h.end,
                                end: p.end,
                            });
                        }
                    }
                    out
                })
                .collect();
        }
        free.extend(pieces);
    }
    free.sort_by_key(|r| r.start);
    Ok(free)
}

/// First fit, lowest address first: the old kernel lives anywhere, the
/// kernel copies segments into place only at reboot.
struct Allocator {
    free: Vec<Range>,
}

fn round_up(v: u64, a: u64) -> Option<u64> {
    v.checked_add(a - 1).map(|v| v & !(a - 1))
}

impl Allocator {
    /// `size` bytes at an address `offset` past an `align`-aligned base
    /// that is itself in free RAM; returns that address.
    fn take(&mut self, size: u64, align: u64, offset: u64) -> Option<u64> {
        let need = offset.checked_add(size)?;
        for i in 0..self.free.len() {
            let r = self.free[i];
            let Some(base) = round_up(r.start, align) else {
                continue;
            };
            let Some(end) = base.checked_add(need) else {
                continue;
            };
            if end > r.end {
                continue;
            }
            let mut rest = Vec::new();
            if base > r.start {
                rest.push(Range {
                    start: r.start,
                    end: base,
                });
            }
            if end < r.end {
                rest.push(Range {
                    start: end,
                    end: r.end,
                });
            }
            self.free.splice(i..=i, rest);
            return Some(base + offset);
        }
        None
    }
}

/// One kexec segment: `data` copied to physical `mem`, zero-filled up to
/// `memsz`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Segment {
    pub data: Vec<u8>,
    pub mem: u64,
    pub memsz: u64,
}

#[derive(Clone, Debug)]
pub struct Prepared {
    pub segments: Vec<Segment>,
    /// The purgatory's address: where the kernel's relocate code jumps.
    pub entry: u64,
    pub kernel_entry: u64,
    pub dtb: u64,
    pub initrd: Option<Range>,
}

/// Fresh randomness for the next kernel's /chosen (None: the running
/// kernel's pool is not ready; the properties are then dropped, as the
/// kernel's own kexec_file_load does).
#[derive(Clone, Debug)]
pub struct Seeds {
    pub kaslr: [u8; 8],
    pub rng: Vec<u8>,
}

/// The purgatory: six AArch64 instructions and two 64-bit literals.
///
/// | word | encoding     | instruction            |
/// |------|--------------|------------------------|
/// | 0    | `0x580000c0` | `ldr x0, #24` (dtb)    |
/// | 1    | `0xaa1f03e1` | `mov x1, xzr`          |
/// | 2    | `0xaa1f03e2` | `mov x2, xzr`          |
/// | 3    | `0xaa1f03e3` | `mov x3, xzr`          |
/// | 4    | `0x58000084` | `ldr x4, #16` (entry)  |
/// | 5    | `0xd61f0080` | `br x4`                |
/// | 6-7  | dtb          | literal, 8-aligned     |
/// | 8-9  | kernel entry | literal, 8-aligned     |
///
/// `ldr Xt, label` (literal) is `0x58000000 | imm19 << 5 | t` with imm19
/// the distance in words from the instruction; `mov Xd, xzr` is
/// `orr Xd, xzr, xzr` = `0xaa1f03e0 | d`; `br Xn` is `0xd61f0000 | n << 5`.
/// The literals sit 8-aligned because the MMU is off here and unaligned
/// loads from Device memory fault.
pub fn purgatory(dtb: u64, kernel_entry: u64) -> Vec<u8> {
    let words: [u32; 10] = [
        0x5800_0000 | 6 << 5,     // ldr x0, pc+24
        0xaa1f_03e0 | 1,          // mov x1, xzr
        0xaa1f_03e0 | 2,          // mov x2, xzr
        0xaa1f_03e0 | 3,          // mov x3, xzr
        0x5800_0000 | 4 << 5 | 4, // ldr x4, pc+16
        0xd61f_0000 | 4 << 5,     // br x4
        dtb as u32,
        (dtb >> 32) as u32,
        kernel_entry as u32,
        (kernel_entry >> 32) as u32,
    ];
    words.iter().flat_map(|w| w.to_le_bytes()).collect()
}

/// Properties a previous boot (or kexec) left in /chosen that would lie
/// to the next kernel.
const STALE_CHOSEN: [&str; 6] = [
    "linux,elfcorehdr",
    "linux,usable-memory-range",
    "linux,initrd-start",
    "linux,initrd-end",
    "kaslr-seed",
    "rng-seed",
];

/// Rewrites /chosen for the next kernel.
pub fn rewrite_chosen(fdt: &mut Fdt, cmdline: &str, initrd: Option<Range>, seeds: Option<&Seeds>) {
    let chosen: &mut Node = fdt.root.child_mut_or_insert("chosen");
    for p in STALE_CHOSEN {
        chosen.remove_prop(p);
    }
    let mut args = cmdline.as_bytes().to_vec();
    args.push(0);
    chosen.set_prop("bootargs", args);
    if let Some(r) = initrd {
        chosen.set_prop("linux,initrd-start", r.start.to_be_bytes().to_vec());
        chosen.set_prop("linux,initrd-end", r.end.to_be_bytes().to_vec());
    }
    if let Some(s) = seeds {
        chosen.set_prop("kaslr-seed", s.kaslr.to_vec());
        chosen.set_prop("rng-seed", s.rng.clone());
    }
}

fn bad(what: &str, reason: impl Into<String>) -> Error {
    Error::BadImage {
        what: what.into(),
        reason: reason.into(),
    }
}

fn bad_input(what: &str, reason: impl Into<String>) -> Error {
    Error::BadInput {
        what: what.into(),
        reason: reason.into(),
    }
}

fn no_room(what: &str, size: u64) -> Error {
    Error::NoRoom {
        what: what.into(),
        size,
    }
}

/// Lays out kernel, initrd, DTB and purgatory in free RAM. `dtb` is the
/// blob to start from (the running kernel's or the spec's).
pub fn prepare(
    kernel: Vec<u8>,
    initrd: Option<Vec<u8>>,
    dtb: &[u8],
    cmdline: &str,
    iomem: &str,
    seeds: Option<&Seeds>,
) -> Result<Prepared> {
    let hdr = parse_image(&kernel).map_err(|r| bad("kernel", r))?;
    if cmdline.len() >= CMDLINE_MAX || cmdline.contains('\0') {
        return Err(bad_input(
            "the command line",
            format!(
                "{} bytes (arm64 takes at most {} and no NUL)",
                cmdline.len(),
                CMDLINE_MAX - 1
            ),
        ));
    }
    let mut fdt = Fdt::parse(dtb).map_err(|e| bad_input("device tree", e.0))?;
    // The running system's memory map: not the slot's fault if unreadable.
    let free = free_ram(iomem).map_err(Error::Unsupported)?;
    let mut alloc = Allocator { free };
    let mut segments = Vec::new();

    let ksize = round_up(hdr.image_size, SEGMENT_ALIGN)
        .ok_or_else(|| bad("kernel", "image_size overflows"))?;
    let kernel_entry = alloc
        .take(ksize, KERNEL_ALIGN, hdr.text_offset)
        .ok_or_else(|| no_room("kernel", ksize))?;
    segments.push(Segment {
        data: kernel,
        mem: kernel_entry,
        memsz: ksize,
    });

    let initrd_range = match initrd {
        None => None,
        Some(data) => {
            let len = data.len() as u64;
            let size =
                round_up(len.max(1), SEGMENT_ALIGN).ok_or_else(|| bad("initrd", "too large"))?;
            let at = alloc
                .take(size, SEGMENT_ALIGN, 0)
                .ok_or_else(|| no_room("initrd", size))?;
            // booting.rst: kernel and initrd in one 1 GiB aligned window
            // of 32 GiB. Both ends come from slot-controlled sizes, so the
            // check cannot subtract before comparing.
            let window = kernel_entry & !((1 << 30) - 1);
            let inside = at >= window
                && at
                    .checked_add(size)
                    .is_some_and(|end| end - window <= WINDOW);
            if !inside {
                return Err(no_room("initrd within the kernel's 32 GiB window", size));
            }
            segments.push(Segment {
                data,
                mem: at,
                memsz: size,
            });
            Some(Range {
                start: at,
                end: at + len,
            })
        }
    };

    rewrite_chosen(&mut fdt, cmdline, initrd_range, seeds);
    let blob = fdt.to_bytes();
    if blob.len() > DTB_MAX {
        return Err(bad_input(
            "device tree",
            format!("{} bytes, over 2 MiB", blob.len()),
        ));
    }
    let dsize = round_up(blob.len() as u64, SEGMENT_ALIGN)
        .ok_or_else(|| bad_input("device tree", "too large"))?;
    let dtb_at = alloc
        .take(dsize, SEGMENT_ALIGN, 0)
        .ok_or_else(|| no_room("device tree", dsize))?;
    segments.push(Segment {
        data: blob,
        mem: dtb_at,
        memsz: dsize,
    });

    let code = purgatory(dtb_at, kernel_entry);
    let entry = alloc
        .take(SEGMENT_ALIGN, SEGMENT_ALIGN, 0)
        .ok_or_else(|| no_room("purgatory", SEGMENT_ALIGN))?;
    segments.push(Segment {
        data: code,
        mem: entry,
        memsz: SEGMENT_ALIGN,
    });

    Ok(Prepared {
        segments,
        entry,
        kernel_entry,
        dtb: dtb_at,
        initrd: initrd_range,
    })
}

/// Fresh seeds from the running kernel's pool, without blocking: PID 1
/// must not hang early in boot waiting for entropy.
fn seeds() -> Option<Seeds> {
    let mut b = vec![0u8; 8 + RNG_SEED_LEN];
    // SAFETY: the buffer is valid for its length.
    let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), libc::GRND_NONBLOCK) };
    if n < 0 || n as usize != b.len() {
        return None;
    }
    let mut kaslr = [0u8; 8];
    kaslr.copy_from_slice(&b[..8]);
    Some(Seeds {
        kaslr,
        rng: b.split_off(8),
    })
}

pub fn load(spec: &BootSpec) -> Result<Method> {
    let kernel = crate::read_regular(&spec.kernel, "kernel", crate::MAX_KERNEL)?;
    let initrd = match &spec.initrd {
        Some(p) => Some(crate::read_regular(p, "initrd", crate::MAX_INITRD)?),
        None => None,
    };
    let max_dtb = crate::fdt::MAX_LEN as u64;
    let dtb = match &spec.dtb {
        Some(p) => crate::read_regular(p, "device tree", max_dtb)?,
        // The running kernel's own tree: a problem there is not the slot's.
        None => crate::read_regular("/sys/firmware/fdt".as_ref(), "device tree", max_dtb)
            .map_err(|e| Error::Unsupported(format!("the running kernel's {e}")))?,
    };
    let iomem = std::fs::read_to_string("/proc/iomem")
        .map_err(|e| Error::Unsupported(format!("/proc/iomem: {e}")))?;
    let p = prepare(
        kernel,
        initrd,
        &dtb,
        &spec.cmdline,
        &iomem,
        seeds().as_ref(),
    )?;
    sys::kexec_load(&p)?;
    Ok(Method::Load)
}

#[cfg(target_arch = "aarch64")]
mod sys {
    use super::{Prepared, KEXEC_ARCH_AARCH64};
    use crate::{Error, Result};

    #[repr(C)]
    struct KexecSegment {
        buf: *const libc::c_void,
        bufsz: libc::size_t,
        mem: *const libc::c_void,
        memsz: libc::size_t,
    }

    pub fn kexec_load(p: &Prepared) -> Result<()> {
        let segs: Vec<KexecSegment> = p
            .segments
            .iter()
            .map(|s| KexecSegment {
                buf: s.data.as_ptr().cast(),
                bufsz: s.data.len(),
                mem: s.mem as *const libc::c_void,
                memsz: s.memsz as libc::size_t,
            })
            .collect();
        // SAFETY: the segment array and every buffer it points to outlive
        // the call; the kernel copies them before returning.
        let r = unsafe {
            libc::syscall(
                libc::SYS_kexec_load,
                p.entry as libc::c_ulong,
                segs.len() as libc::c_ulong,
                segs.as_ptr(),
                KEXEC_ARCH_AARCH64 as libc::c_ulong,
            )
        };
        if r == 0 {
            return Ok(());
        }
        let e = std::io::Error::last_os_error();
        let syscall = match e.raw_os_error() {
            // machine_kexec_prepare: secondary CPUs that cannot be taken
            // offline (spin-table boards) block kexec.
            Some(libc::EBUSY) => {
                "kexec_load (EBUSY: CPUs are stuck in the kernel; spin-table boot needs nr_cpus=1)"
            }
            Some(libc::EPERM) => {
                "kexec_load (EPERM: needs CAP_SYS_BOOT, or kexec_load_disabled is set)"
            }
            _ => "kexec_load",
        };
        Err(Error::Refused { syscall, source: e })
    }
}

#[cfg(not(target_arch = "aarch64"))]
mod sys {
    use super::Prepared;
    use crate::{Error, Result};

    pub fn kexec_load(_: &Prepared) -> Result<()> {
        Err(Error::Unsupported(
            "the arm64 loader runs only on an arm64 kernel".into(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IOMEM: &str = "\
09000000-09000fff : pl011@9000000
  09000000-09000fff : pl011@9000000
40000000-4fffffff : System RAM
  40000000-400fffff : reserved
  40210000-4180ffff : Kernel code
  41810000-41d1ffff : reserved
  41d20000-41f5ffff : Kernel data
  48000000-480fffff : reserved
  4ff00000-4fffffff : reserved
";

    pub(crate) fn image(image_size: u64, file_len: usize) -> Vec<u8> {
        let mut b = vec![0u8; file_len];
        b[16..24].copy_from_slice(&image_size.to_le_bytes());
        b[24..32].copy_from_slice(&2u64.to_le_bytes()); // 4K pages, LE
        b[56..60].copy_from_slice(b"ARM\x64");
        b
    }

    #[test]
    fn image_header() {
        let h = parse_image(&image(0x200_0000, 4096)).unwrap();
        assert_eq!(
            h,
            ImageHeader {
                text_offset: 0,
                image_size: 0x200_0000,
                flags: 2
            }
        );
        assert!(parse_image(&[0x1f, 0x8b, 8, 0])
            .unwrap_err()
            .contains("gzip"));
        assert!(parse_image(&[0; 63]).is_err());
        assert!(parse_image(&[0; 4096]).unwrap_err().contains("magic"));
        let mut be = image(0x200_0000, 4096);
        be[24] = 1;
        assert!(parse_image(&be).unwrap_err().contains("big-endian"));
        assert!(parse_image(&image(0, 4096)).is_err());
        assert!(parse_image(&image(100, 4096)).is_err());
    }

    #[test]
    fn free_ram_subtracts_reserved() {
        let f = free_ram(IOMEM).unwrap();
        assert_eq!(
            f,
            vec![
                Range {
                    start: 0x4010_0000,
                    end: 0x4181_0000
                },
                Range {
                    start: 0x41d2_0000,
                    end: 0x4800_0000
                },
                Range {
                    start: 0x4810_0000,
                    end: 0x4ff0_0000
                },
            ]
        );
        let unprivileged = IOMEM.replace("40000000-4fffffff", "00000000-00000000");
        assert!(free_ram(&unprivileged).is_err());
        assert!(free_ram("").is_err());
        assert!(free_ram("zz-40 : System RAM").is_err());
    }

    #[test]
    fn purgatory_words() {
        let p = purgatory(0x1122_3344_5566_7788, 0x4020_0000);
        let w: Vec<u32> = p
            .chunks(4)
            .map(|c| u32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        // Encodings cross-checked with u-root's trampoline and the Arm ARM.
        assert_eq!(
            w,
            [
                0x580000c0, 0xaa1f03e1, 0xaa1f03e2, 0xaa1f03e3, 0x58000084, 0xd61f0080, 0x55667788,
                0x11223344, 0x40200000, 0
            ]
        );
    }

    fn dtb() -> Vec<u8> {
        let mut root = Node::new("");
        let mut chosen = Node::new("chosen");
        chosen.set_prop("bootargs", b"old\0".to_vec());
        chosen.set_prop("linux,elfcorehdr", vec![0; 16]);
        chosen.set_prop("kaslr-seed", vec![0; 8]);
        chosen.set_prop("stdout-path", b"/pl011@9000000\0".to_vec());
        root.children.push(chosen);
        Fdt {
            boot_cpuid_phys: 0,
            reservations: vec![],
            root,
        }
        .to_bytes()
    }

    #[test]
    fn prepare_lays_out_segments_and_rewrites_chosen() {
        let seeds = Seeds {
            kaslr: [7; 8],
            rng: vec![9; RNG_SEED_LEN],
        };
        let p = prepare(
            image(0x1a0_0000, 0x100_0000),
            Some(vec![1; 100_000]),
            &dtb(),
            "console=ttyAMA0 marker",
            IOMEM,
            Some(&seeds),
        )
        .unwrap();
        // 26 MiB do not fit below the reserved block at 0x41810000; the
        // next 2 MiB aligned base with room is 0x41e00000.
        assert_eq!(p.kernel_entry, 0x41e0_0000);
        assert_eq!(p.segments.len(), 4);
        let free = free_ram(IOMEM).unwrap();
        let mut spans: Vec<(u64, u64)> = Vec::new();
        for s in &p.segments {
            assert_eq!(s.mem % SEGMENT_ALIGN, 0);
            assert_eq!(s.memsz % SEGMENT_ALIGN, 0);
            assert!(s.data.len() as u64 <= s.memsz);
            assert!(
                free.iter()
                    .any(|r| r.start <= s.mem && s.mem + s.memsz <= r.end),
                "{:#x} outside free RAM",
                s.mem
            );
            for &(a, b) in &spans {
                assert!(s.mem + s.memsz <= a || s.mem >= b, "overlap");
            }
            spans.push((s.mem, s.mem + s.memsz));
        }
        let initrd = p.initrd.unwrap();
        assert_eq!(initrd.end - initrd.start, 100_000);
        assert_eq!(p.entry, p.segments[3].mem);
        assert_eq!(p.segments[3].data, purgatory(p.dtb, p.kernel_entry));

        let f = Fdt::parse(&p.segments[2].data).unwrap();
        let c = f.root.child("chosen").unwrap();
        assert_eq!(c.prop("bootargs").unwrap(), b"console=ttyAMA0 marker\0");
        assert_eq!(
            c.prop("linux,initrd-start").unwrap(),
            initrd.start.to_be_bytes()
        );
        assert_eq!(
            c.prop("linux,initrd-end").unwrap(),
            initrd.end.to_be_bytes()
        );
        assert_eq!(c.prop("kaslr-seed").unwrap(), [7; 8]);
        assert_eq!(c.prop("rng-seed").unwrap().len(), RNG_SEED_LEN);
        assert!(c.prop("linux,elfcorehdr").is_none());
        assert!(c.prop("stdout-path").is_some());
    }

    #[test]
    fn prepare_without_initrd_or_seeds_drops_them() {
        let p = prepare(image(0x20_0000, 4096), None, &dtb(), "x", IOMEM, None).unwrap();
        assert_eq!(p.segments.len(), 3);
        let f = Fdt::parse(&p.segments[1].data).unwrap();
        let c = f.root.child("chosen").unwrap();
        for gone in STALE_CHOSEN {
            assert!(c.prop(gone).is_none(), "{gone}");
        }
    }

    /// Every refusal a slot causes is a slot fault (its try counts, the
    /// other slot boots); only the running system's own problems are not.
    #[test]
    fn errors_are_classified_by_cause() {
        let k = || image(0x20_0000, 4096);
        let slot_fault = |r: Result<Prepared>, want: &str| {
            let e = r.unwrap_err();
            assert!(e.slot_at_fault(), "{want}: {e}");
            assert!(e.to_string().contains(want), "{want}: {e}");
        };
        // A kernel whose image_size fits in no free RAM range.
        let r = prepare(image(0x1000_0000, 4096), None, &dtb(), "", IOMEM, None);
        assert!(matches!(&r, Err(Error::NoRoom { what, .. }) if what == "kernel"));
        slot_fault(r, "no room for the kernel");
        slot_fault(
            prepare(image(u64::MAX - 4, 4096), None, &dtb(), "", IOMEM, None),
            "image_size",
        );
        slot_fault(
            prepare(vec![0; 8192], None, &dtb(), "", IOMEM, None),
            "magic",
        );
        let r = prepare(k(), None, b"nope", "", IOMEM, None);
        assert!(matches!(&r, Err(Error::BadInput { what, .. }) if what == "device tree"));
        slot_fault(r, "device tree");
        // COMMAND_LINE_SIZE: 2047 characters and the NUL.
        let long = "x".repeat(CMDLINE_MAX);
        slot_fault(
            prepare(k(), None, &dtb(), &long, IOMEM, None),
            "command line",
        );
        assert!(prepare(k(), None, &dtb(), &long[1..], IOMEM, None).is_ok());
        slot_fault(
            prepare(k(), None, &dtb(), "a\0b", IOMEM, None),
            "command line",
        );
        // An initrd too large for any free range.
        slot_fault(
            prepare(k(), Some(vec![0; 0x1000_0000]), &dtb(), "", IOMEM, None),
            "initrd",
        );
        // The running system's memory map is not the slot's fault.
        let e = prepare(k(), None, &dtb(), "", "", None).unwrap_err();
        assert!(!e.slot_at_fault(), "{e}");
    }

    /// The initrd must share the kernel's 1 GiB aligned 32 GiB window:
    /// below the window's base (where `at + size - window` used to
    /// underflow) and past its end are both refused, as the slot's fault.
    #[test]
    fn initrd_outside_the_window_is_a_slot_fault() {
        // 16 MiB of RAM at 1 GiB, 1 GiB at 2 GiB: a 100 MiB kernel goes
        // high (window from 2 GiB), a small initrd first fits low.
        let iomem = "40000000-40ffffff : System RAM\n80000000-bfffffff : System RAM\n";
        let e = prepare(
            image(100 << 20, 4096),
            Some(vec![1; 4096]),
            &dtb(),
            "",
            iomem,
            None,
        )
        .unwrap_err();
        assert!(
            matches!(&e, Error::NoRoom { what, .. } if what.contains("window")),
            "{e}"
        );
        assert!(e.slot_at_fault());
        // RAM at 1 GiB and at 64 GiB: a kernel low, a 300 MiB initrd high.
        let iomem = "40000000-4fffffff : System RAM\n1000000000-107fffffff : System RAM\n";
        let e = prepare(
            image(0x20_0000, 4096),
            Some(vec![1; 300 << 20]),
            &dtb(),
            "",
            iomem,
            None,
        )
        .unwrap_err();
        assert!(
            matches!(&e, Error::NoRoom { what, .. } if what.contains("window")),
            "{e}"
        );
        // Both in the window: fine.
        let iomem = "40000000-7fffffff : System RAM\n";
        assert!(prepare(
            image(100 << 20, 4096),
            Some(vec![1; 4096]),
            &dtb(),
            "",
            iomem,
            None
        )
        .is_ok());
    }
}
