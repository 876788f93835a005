//! A slot's own device tree with the firmware's memory description: for
//! boards that boot the slot kernel with its own DTB (`kexec_dtb = slot`
//! in the updater) rather than the live tree. The firmware sizes RAM and
//! reserves memory (on a Raspberry Pi: the VideoCore's share, set by
//! `gpu_mem`); a static DTB knows neither, so `/memory*` nodes,
//! `/reserved-memory` and the memory reservation block come from the
//! running kernel's tree. Everything else the firmware fixed up is lost:
//! that is what the default (the live tree, `BootSpec::dtb = None`)
//! keeps.

use crate::fdt::{Fdt, Node};
use crate::{Error, Result};

fn is_memory(n: &Node) -> bool {
    n.name == "memory" || n.name.starts_with("memory@") || n.name == "reserved-memory"
}

/// Replaces `slot`'s memory nodes and reservations by `live`'s.
pub fn carry_memory(slot: &mut Fdt, live: &Fdt) {
    slot.root.children.retain(|c| !is_memory(c));
    slot.root
        .children
        .extend(live.root.children.iter().filter(|c| is_memory(c)).cloned());
    slot.reservations = live.reservations.clone();
}

/// [`carry_memory`] on blobs (each at most [`crate::fdt::MAX_LEN`],
/// bounded by the parser): a slot blob that does not parse is the slot's
/// fault, a live one that does not the running system's.
pub fn merge(slot: &[u8], live: &[u8]) -> Result<Vec<u8>> {
    let mut s = Fdt::parse(slot).map_err(|e| Error::BadInput {
        what: "device tree".into(),
        reason: e.0,
    })?;
    let l = Fdt::parse(live)
        .map_err(|e| Error::Unsupported(format!("the running kernel's device tree: {}", e.0)))?;
    carry_memory(&mut s, &l);
    Ok(s.to_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(mem: &[(&str, &[u8])], other: &str) -> Fdt {
        let mut root = Node::new("");
        for (name, reg) in mem {
            let mut n = Node::new(name);
            n.set_prop("reg", reg.to_vec());
            root.children.push(n);
        }
        let mut o = Node::new(other);
        o.set_prop("compatible", b"x\0".to_vec());
        root.children.push(o);
        Fdt {
            boot_cpuid_phys: 0,
            reservations: vec![],
            root,
        }
    }

    #[test]
    fn memory_comes_from_the_live_tree_the_rest_from_the_slot() {
        let mut slot = tree(&[("memory@0", &[0, 1])], "soc");
        let mut live = tree(
            &[
                ("memory@0", &[0, 2]),
                ("reserved-memory", &[9]),
                ("memory@80000000", &[3]),
            ],
            "firmware-fixup",
        );
        live.reservations = vec![(0x3b40_0000, 0x4c0_0000)];
        let blob = merge(&slot.to_bytes(), &live.to_bytes()).unwrap();
        carry_memory(&mut slot, &live);
        let back = Fdt::parse(&blob).unwrap();
        assert_eq!(back, slot);
        assert_eq!(
            back.root.child("memory@0").unwrap().prop("reg"),
            Some(&[0u8, 2][..])
        );
        assert!(back.root.child("reserved-memory").is_some());
        assert!(back.root.child("memory@80000000").is_some());
        assert!(
            back.root.child("soc").is_some(),
            "the slot's own nodes stay"
        );
        assert!(back.root.child("firmware-fixup").is_none());
        assert_eq!(back.reservations, live.reservations);
    }

    #[test]
    fn whose_fault() {
        let good = tree(&[], "soc").to_bytes();
        assert!(merge(b"not a tree", &good).unwrap_err().slot_at_fault());
        assert!(!merge(&good, b"not a tree").unwrap_err().slot_at_fault());
    }
}
