//! Flattened device tree (DTB) read into a tree, edited, written back.
//!
//! Only what the arm64 loader needs: the whole tree with properties in
//! their original order (the next kernel reads the same blob the firmware
//! gave the running one, plus a rewritten /chosen), the memory reservation
//! block, and `boot_cpuid_phys`. The reader is total: every offset and
//! length comes from the blob, so each is checked and a bad blob is an
//! error, never a panic. Nesting is capped so a hostile blob cannot make
//! the writer recurse without bound.
//!
//! Why not the `fdt` crate: it reads but does not write, and a rewrite
//! needs every node and property anyway; the structure block is five
//! token kinds, smaller than the glue to another crate.

use std::collections::HashMap;

const MAGIC: u32 = 0xd00d_feed;
const HEADER_LEN: usize = 40;
const BEGIN_NODE: u32 = 1;
const END_NODE: u32 = 2;
const PROP: u32 = 3;
const NOP: u32 = 4;
const END: u32 = 9;
/// Real trees nest a handful of levels; this only bounds hostile input.
const MAX_DEPTH: usize = 64;
/// The largest blob read or written: booting.rst's limit for arm64.
pub const MAX_LEN: usize = 2 << 20;
/// What the parsed tree may cost, in bytes per byte of blob (node and
/// property records plus their names and values). A property record costs
/// 48 bytes for at least 12 bytes of blob and a node 72 for at least 12,
/// so real trees stay near 3; without a budget, thousands of properties
/// naming one long string would each copy it (a 2 MiB blob asked for
/// 85 GiB). Vectors may hold up to twice their length while growing, so
/// the peak of a parse is below `2 × EXPANSION + 1` times the blob.
pub const EXPANSION: usize = 8;

/// Why a blob was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("device tree: {0}")]
pub struct FdtError(pub String);

fn bad(msg: impl Into<String>) -> FdtError {
    FdtError(msg.into())
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Node {
    pub name: String,
    pub props: Vec<(String, Vec<u8>)>,
    pub children: Vec<Node>,
}

impl Node {
    pub fn new(name: &str) -> Node {
        Node {
            name: name.into(),
            ..Node::default()
        }
    }

    pub fn prop(&self, name: &str) -> Option<&[u8]> {
        self.props
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_slice())
    }

    /// Replaces the value in place (keeps its position) or appends.
    pub fn set_prop(&mut self, name: &str, value: Vec<u8>) {
        match self.props.iter_mut().find(|(n, _)| n == name) {
            Some((_, v)) => *v = value,
            None => self.props.push((name.into(), value)),
        }
    }

    pub fn remove_prop(&mut self, name: &str) {
        self.props.retain(|(n, _)| n != name);
    }

    pub fn child(&self, name: &str) -> Option<&Node> {
        self.children.iter().find(|c| c.name == name)
    }

    /// The child called `name`, created empty when missing.
    pub fn child_mut_or_insert(&mut self, name: &str) -> &mut Node {
        let i = match self.children.iter().position(|c| c.name == name) {
            Some(i) => i,
            None => {
                self.children.push(Node::new(name));
                self.children.len() - 1
            }
        };
        &mut self.children[i]
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fdt {
    pub boot_cpuid_phys: u32,
    /// The memory reservation block: (address, size) pairs.
    pub reservations: Vec<(u64, u64)>,
    pub root: Node,
}

fn be32(b: &[u8], at: usize) -> Result<u32, FdtError> {
    let s = b
        .get(at..at.checked_add(4).ok_or_else(|| bad("offset overflow"))?)
        .ok_or_else(|| bad(format!("truncated at byte {at}")))?;
    Ok(u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
}

fn be64(b: &[u8], at: usize) -> Result<u64, FdtError> {
    let hi = be32(b, at)? as u64;
    let lo = be32(b, at.checked_add(4).ok_or_else(|| bad("offset overflow"))?)? as u64;
    Ok(hi << 32 | lo)
}

fn align4(n: usize) -> Option<usize> {
    n.checked_add(3).map(|n| n & !3)
}

/// The NUL-terminated string at `at` in `b`.
fn cstr(b: &[u8], at: usize) -> Result<&str, FdtError> {
    let tail = b
        .get(at..)
        .ok_or_else(|| bad(format!("string offset {at} out of bounds")))?;
    let len = tail
        .iter()
        .position(|&c| c == 0)
        .ok_or_else(|| bad(format!("unterminated string at {at}")))?;
    std::str::from_utf8(&tail[..len]).map_err(|_| bad(format!("string at {at} is not UTF-8")))
}

impl Fdt {
    /// Reads a blob of at most [`MAX_LEN`] bytes into a tree that costs at
    /// most [`EXPANSION`] times the blob.
    pub fn parse(blob: &[u8]) -> Result<Fdt, FdtError> {
        if be32(blob, 0)? != MAGIC {
            return Err(bad("bad magic (not a DTB)"));
        }
        let total = be32(blob, 4)? as usize;
        if total > MAX_LEN {
            return Err(bad(format!(
                "header says {total} bytes, more than the {MAX_LEN} a kernel accepts"
            )));
        }
        let blob = blob.get(..total).ok_or_else(|| {
            bad(format!(
                "header says {total} bytes, blob has {}",
                blob.len()
            ))
        })?;
        let off_struct = be32(blob, 8)? as usize;
        let off_strings = be32(blob, 12)? as usize;
        let off_rsv = be32(blob, 16)? as usize;
        let version = be32(blob, 20)?;
        let last_comp = be32(blob, 24)?;
        let boot_cpuid_phys = be32(blob, 28)?;
        if version < 16 || last_comp > 17 {
            return Err(bad(format!(
                "version {version} (compatible down to {last_comp}) unsupported; need 16 or 17"
            )));
        }
        let size_strings = be32(blob, 32)? as usize;
        let strings = off_strings
            .checked_add(size_strings)
            .and_then(|end| blob.get(off_strings..end))
            .ok_or_else(|| bad("strings block out of bounds"))?;
        // Version 16 has no size_dt_struct: the block runs to the blob's end.
        let structs = if version >= 17 {
            let size = be32(blob, 36)? as usize;
            off_struct
                .checked_add(size)
                .and_then(|e| blob.get(off_struct..e))
        } else {
            blob.get(off_struct..)
        }
        .ok_or_else(|| bad("structure block out of bounds"))?;

        let mut budget = Budget(total.saturating_mul(EXPANSION));
        let mut reservations = Vec::new();
        let mut at = off_rsv;
        loop {
            let addr = be64(blob, at)?;
            let size = be64(
                blob,
                at.checked_add(8).ok_or_else(|| bad("offset overflow"))?,
            )?;
            if addr == 0 && size == 0 {
                break;
            }
            budget.spend(16)?;
            reservations.push((addr, size));
            at = at
                .checked_add(16)
                .ok_or_else(|| bad("reservation block overflow"))?;
        }

        let root = parse_struct(structs, strings, &mut budget)?;
        Ok(Fdt {
            boot_cpuid_phys,
            reservations,
            root,
        })
    }

    /// A version 17 blob: header, reservations, structure, strings (each
    /// property name stored once).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut structs = Vec::new();
        let mut strings = Vec::new();
        let mut offsets: HashMap<String, u32> = HashMap::new();
        write_node(&self.root, &mut structs, &mut strings, &mut offsets);
        structs.extend_from_slice(&END.to_be_bytes());

        let off_rsv = HEADER_LEN; // already 8-aligned
        let rsv_len = (self.reservations.len() + 1) * 16;
        let off_struct = off_rsv + rsv_len;
        let off_strings = off_struct + structs.len();
        let total = off_strings + strings.len();

        let mut out = Vec::with_capacity(total);
        for v in [
            MAGIC,
            total as u32,
            off_struct as u32,
            off_strings as u32,
            off_rsv as u32,
            17,
            16,
            self.boot_cpuid_phys,
            strings.len() as u32,
            structs.len() as u32,
        ] {
            out.extend_from_slice(&v.to_be_bytes());
        }
        for &(a, s) in self.reservations.iter().chain([(0, 0)].iter()) {
            out.extend_from_slice(&a.to_be_bytes());
            out.extend_from_slice(&s.to_be_bytes());
        }
        out.extend_from_slice(&structs);
        out.extend_from_slice(&strings);
        out
    }
}

/// Bytes the tree may still take ([`EXPANSION`]), spent before each
/// allocation.
struct Budget(usize);

impl Budget {
    fn spend(&mut self, n: usize) -> Result<(), FdtError> {
        // The figure is EXPANSION's.
        self.0 = self.0.checked_sub(n).ok_or_else(|| {
            bad("the tree would take more than 8 times the blob's size in memory")
        })?;
        Ok(())
    }
}

fn parse_struct(s: &[u8], strings: &[u8], budget: &mut Budget) -> Result<Node, FdtError> {
    // Nodes being filled, innermost last; the root is pushed by the first
    // BEGIN_NODE and returned by its END_NODE.
    let mut stack: Vec<Node> = Vec::new();
    let mut at = 0usize;
    loop {
        let token = be32(s, at)?;
        at += 4;
        match token {
            BEGIN_NODE => {
                if stack.len() >= MAX_DEPTH {
                    return Err(bad(format!("nodes nest deeper than {MAX_DEPTH}")));
                }
                let name = cstr(s, at)?;
                at = align4(at + name.len() + 1).ok_or_else(|| bad("offset overflow"))?;
                budget.spend(std::mem::size_of::<Node>() + name.len())?;
                stack.push(Node::new(name));
            }
            END_NODE => {
                let node = stack.pop().ok_or_else(|| bad("END_NODE without a node"))?;
                match stack.last_mut() {
                    Some(parent) => parent.children.push(node),
                    None => {
                        // Only NOPs may sit between the root's end and END.
                        loop {
                            match be32(s, at)? {
                                NOP => at += 4,
                                END => return Ok(node),
                                t => return Err(bad(format!("token {t} after the root node"))),
                            }
                        }
                    }
                }
            }
            PROP => {
                let len = be32(s, at)? as usize;
                let nameoff =
                    be32(s, at.checked_add(4).ok_or_else(|| bad("offset overflow"))?)? as usize;
                at += 8;
                let value = at
                    .checked_add(len)
                    .and_then(|e| s.get(at..e))
                    .ok_or_else(|| bad(format!("property value at {at} out of bounds")))?;
                let name = cstr(strings, nameoff)?;
                let node = stack
                    .last_mut()
                    .ok_or_else(|| bad("property outside any node"))?;
                budget.spend(std::mem::size_of::<(String, Vec<u8>)>() + name.len() + len)?;
                node.props.push((name.into(), value.to_vec()));
                at = align4(at + len).ok_or_else(|| bad("offset overflow"))?;
            }
            NOP => {}
            END => return Err(bad("END before the root node closed")),
            t => return Err(bad(format!("unknown token {t} at {}", at - 4))),
        }
    }
}

/// A well-formed blob of `len` bytes (at least 64, a multiple of 4) that
/// is hostile to a reader copying property names: one string of about
/// half the blob, named by as many empty properties of the root as fit in
/// the other half. For tests (in-process and QEMU) and the fuzz seed.
#[doc(hidden)]
pub fn many_props_one_long_name(len: usize) -> Vec<u8> {
    let len = len.max(64) & !3;
    let name_len = (len / 2).saturating_sub(64);
    // header 40, reservations 16, BEGIN_NODE + "" 8, END_NODE + END 8.
    let fixed = HEADER_LEN + 16 + 8 + 8;
    let props = len.saturating_sub(fixed + name_len + 4) / 12;
    let off_struct = HEADER_LEN + 16;
    let size_struct = 8 + props * 12 + 8;
    let off_strings = off_struct + size_struct;
    let mut strings = vec![b'n'; name_len];
    strings.push(0);
    let total = len.max(off_strings + strings.len());
    let mut out = Vec::with_capacity(total);
    for v in [
        MAGIC,
        total as u32,
        off_struct as u32,
        off_strings as u32,
        HEADER_LEN as u32,
        17,
        16,
        0,
        strings.len() as u32,
        size_struct as u32,
    ] {
        out.extend_from_slice(&v.to_be_bytes());
    }
    out.extend_from_slice(&[0; 16]);
    out.extend_from_slice(&BEGIN_NODE.to_be_bytes());
    out.extend_from_slice(&[0; 4]);
    for _ in 0..props {
        out.extend_from_slice(&PROP.to_be_bytes());
        out.extend_from_slice(&[0; 8]); // length 0, name offset 0
    }
    out.extend_from_slice(&END_NODE.to_be_bytes());
    out.extend_from_slice(&END.to_be_bytes());
    out.extend_from_slice(&strings);
    out.resize(total, 0);
    out
}

fn pad4(v: &mut Vec<u8>) {
    while !v.len().is_multiple_of(4) {
        v.push(0);
    }
}

fn write_node(
    n: &Node,
    out: &mut Vec<u8>,
    strings: &mut Vec<u8>,
    offsets: &mut HashMap<String, u32>,
) {
    out.extend_from_slice(&BEGIN_NODE.to_be_bytes());
    out.extend_from_slice(n.name.as_bytes());
    out.push(0);
    pad4(out);
    for (name, value) in &n.props {
        let off = *offsets.entry(name.clone()).or_insert_with(|| {
            let off = strings.len() as u32;
            strings.extend_from_slice(name.as_bytes());
            strings.push(0);
            off
        });
        out.extend_from_slice(&PROP.to_be_bytes());
        out.extend_from_slice(&(value.len() as u32).to_be_bytes());
        out.extend_from_slice(&off.to_be_bytes());
        out.extend_from_slice(value);
        pad4(out);
    }
    for c in &n.children {
        write_node(c, out, strings, offsets);
    }
    out.extend_from_slice(&END_NODE.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample() -> Fdt {
        let mut root = Node::new("");
        root.set_prop("#address-cells", 2u32.to_be_bytes().to_vec());
        root.set_prop("compatible", b"linux,dummy-virt\0".to_vec());
        let mut mem = Node::new("memory@40000000");
        mem.set_prop("device_type", b"memory\0".to_vec());
        let mut reg = 0x4000_0000u64.to_be_bytes().to_vec();
        reg.extend_from_slice(&0x1000_0000u64.to_be_bytes());
        mem.set_prop("reg", reg);
        root.children.push(mem);
        let mut chosen = Node::new("chosen");
        chosen.set_prop("bootargs", b"console=ttyAMA0\0".to_vec());
        chosen.set_prop("kaslr-seed", vec![0; 8]);
        root.children.push(chosen);
        Fdt {
            boot_cpuid_phys: 0,
            reservations: vec![(0, 0x1000)],
            root,
        }
    }

    #[test]
    fn round_trips() {
        let f = sample();
        let blob = f.to_bytes();
        assert_eq!(Fdt::parse(&blob).unwrap(), f);
        // Writing what was read gives the same bytes.
        assert_eq!(Fdt::parse(&blob).unwrap().to_bytes(), blob);
    }

    #[test]
    fn every_truncation_and_corruption_is_an_error_not_a_panic() {
        let blob = sample().to_bytes();
        for n in 0..blob.len() {
            assert!(Fdt::parse(&blob[..n]).is_err(), "truncated to {n}");
        }
        // Flip bytes one at a time: parse may succeed or fail, never panic.
        for i in 0..blob.len() {
            for x in [0x01u8, 0x80, 0xff] {
                let mut b = blob.clone();
                b[i] ^= x;
                let _ = Fdt::parse(&b);
            }
        }
    }

    #[test]
    fn refuses_deep_nesting() {
        let mut n = Node::new("leaf");
        for i in 0..(MAX_DEPTH + 1) {
            let mut p = Node::new(&format!("n{i}"));
            p.children.push(n);
            n = p;
        }
        n.name.clear();
        let f = Fdt {
            boot_cpuid_phys: 0,
            reservations: vec![],
            root: n,
        };
        let e = Fdt::parse(&f.to_bytes()).unwrap_err();
        assert!(e.0.contains("nest"), "{e}");
    }

    #[test]
    fn hostile_expansion_and_size_are_refused() {
        // 2 MiB: about 87,000 properties naming one 1 MiB string.
        let blob = many_props_one_long_name(MAX_LEN);
        assert_eq!(blob.len(), MAX_LEN);
        let e = Fdt::parse(&blob).unwrap_err();
        assert!(e.0.contains("times the blob"), "{e}");
        // The same shape, small enough to stay within the budget, parses:
        // the generator makes a valid tree, so the refusal is the budget.
        let f = Fdt::parse(&many_props_one_long_name(256)).unwrap();
        assert!(!f.root.props.is_empty());
        let mut big = sample().to_bytes();
        big.resize(MAX_LEN + 4, 0);
        let total = (MAX_LEN + 4) as u32;
        big[4..8].copy_from_slice(&total.to_be_bytes());
        assert!(Fdt::parse(&big).unwrap_err().0.contains("more than"));
    }

    #[test]
    fn nops_are_skipped() {
        let mut blob = sample().to_bytes();
        // Replace the root's first token? No: insert a NOP by rewriting the
        // trailing END into NOP + END (size_dt_struct grows by 4).
        let off_strings = u32::from_be_bytes(blob[12..16].try_into().unwrap()) as usize;
        blob.splice(off_strings - 4..off_strings - 4, NOP.to_be_bytes());
        let fix = |b: &mut Vec<u8>, at: usize, d: u32| {
            let v = u32::from_be_bytes(b[at..at + 4].try_into().unwrap()) + d;
            b[at..at + 4].copy_from_slice(&v.to_be_bytes());
        };
        fix(&mut blob, 4, 4);
        fix(&mut blob, 12, 4);
        fix(&mut blob, 36, 4);
        assert_eq!(Fdt::parse(&blob).unwrap(), sample());
    }
}
