//! What `status` shows about a target's state area, as human lines and as
//! one JSON object: the single rendering behind `fwpack status` (host) and
//! `fwpack-updater status` (device), so the two cannot drift apart.
//!
//! JSON is written by hand (no serde_json: this is linked into the 1 MiB
//! device binary); field names and shapes are documented in the README.

use std::fmt::Write as _;

use crate::record::Invalid;
use crate::state::RecordHealth;
use crate::{Running, Slot, SlotInfo, StateArea};

/// A JSON string literal for `s` (quotes included).
pub fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn hex(b: &[u8]) -> String {
    b.iter()
        .fold(String::with_capacity(2 * b.len()), |mut s, x| {
            let _ = write!(s, "{x:02x}");
            s
        })
}

fn opt_slot(s: Option<Slot>) -> String {
    s.map_or_else(|| "null".into(), |s| format!("\"{s}\""))
}

/// A target's state area as `status` describes it.
pub struct Status<'a> {
    /// The target as the user named it (a path).
    pub target: &'a str,
    /// What the storage says it is ([`crate::Storage::describe`]).
    pub describe: &'a str,
    pub area: &'a StateArea,
}

impl Status<'_> {
    /// One JSON object, no trailing newline.
    pub fn json(&self) -> String {
        let l = self.area.layout();
        let b = self.area.boot();
        let slot = |i: &SlotInfo| {
            format!(
                "{{\"state\":\"{}\",\"version\":{},\"label\":{},\"image_id\":\"{}\",\"fell_back\":{}}}",
                i.state.name(),
                i.version,
                json_str(&i.label),
                hex(&i.image_id),
                i.fell_back
            )
        };
        let groups: Vec<String> = l
            .groups
            .iter()
            .map(|g| {
                format!(
                    "{{\"name\":{},\"A\":{{\"offset\":{},\"size\":{}}},\"B\":{{\"offset\":{},\"size\":{}}}}}",
                    json_str(&g.name),
                    g.slots[0].offset,
                    g.slots[0].size,
                    g.slots[1].offset,
                    g.slots[1].size
                )
            })
            .collect();
        let journal = self.area.journal().map_or_else(
            || "null".to_string(),
            |j| {
                format!(
                    "{{\"image_id\":\"{}\",\"slot\":\"{}\",\"segment\":{},\"offset\":{},\"verified\":{},\"done_bytes\":{},\"source\":{}}}",
                    hex(&j.image_id),
                    j.slot,
                    j.segment,
                    j.offset,
                    j.verified,
                    j.done_bytes,
                    json_str(&j.source)
                )
            },
        );
        format!(
            "{{\"target\":{},\"describe\":{},\"board\":{},\"state_offset\":{},\"state_copy_distance\":{},\"groups\":[{}],\"active\":\"{}\",\"pending\":{},\"tries_left\":{},\"confirmed\":{},\"rollback_floor\":{},\"below_floor\":{},\"slots\":{{\"A\":{},\"B\":{}}},\"journal\":{},\"records\":{},\"running\":{}}}",
            json_str(self.target),
            json_str(self.describe),
            json_str(&l.board),
            l.state_offset,
            l.copy_distance,
            groups.join(","),
            b.active,
            opt_slot(b.pending),
            b.tries_left,
            b.confirmed,
            b.rollback_floor,
            b.below_floor(),
            slot(b.slot(Slot::A)),
            slot(b.slot(Slot::B)),
            journal,
            health_json(self.area.health()),
            running_json(self.area.running()),
        )
    }

    /// Human lines, each ending in a newline.
    pub fn text(&self) -> String {
        let l = self.area.layout();
        let b = self.area.boot();
        let mut o = String::new();
        let _ = writeln!(o, "target       {}", self.describe);
        let _ = writeln!(o, "board        {}", l.board);
        let _ = writeln!(
            o,
            "state area   copies at {} and {} ({} bytes each)",
            l.state_offset,
            l.location().copy_offset(1),
            crate::STATE_HALF_LEN
        );
        for g in &l.groups {
            let _ = writeln!(
                o,
                "group        {:<12} A {}+{}  B {}+{}",
                g.name, g.slots[0].offset, g.slots[0].size, g.slots[1].offset, g.slots[1].size
            );
        }
        let _ = writeln!(
            o,
            "active       {}{}",
            b.active,
            if b.confirmed { " (confirmed)" } else { "" }
        );
        let _ = match b.pending {
            Some(p) => writeln!(o, "pending      {p} ({} tries left)", b.tries_left),
            None => writeln!(o, "pending      none"),
        };
        let _ = writeln!(
            o,
            "rollback     images older than version {} are refused",
            b.rollback_floor
        );
        if b.below_floor() {
            let _ = writeln!(
                o,
                "below floor  the active slot {} (version {}) is below the rollback floor: booted by a fallback that fallback_below_floor = allow permitted",
                b.active,
                b.slot(b.active).version
            );
        }
        for s in [Slot::A, Slot::B] {
            let i = b.slot(s);
            let _ = writeln!(
                o,
                "slot {s}       {:<9} version {}{}{}",
                i.state.name(),
                i.version,
                if i.label.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", i.label)
                },
                if i.fell_back {
                    ", tried and fell back"
                } else {
                    ""
                }
            );
        }
        let _ = match self.area.journal() {
            Some(j) => writeln!(
                o,
                "journal      apply to slot {} in progress: segment {} offset {} ({} bytes done{}){}",
                j.slot,
                j.segment,
                j.offset,
                j.done_bytes,
                if j.verified { ", read back" } else { "" },
                if j.source.is_empty() {
                    String::new()
                } else {
                    format!(" from {}", j.source)
                }
            ),
            None => writeln!(o, "journal      idle"),
        };
        if let Running::Slot { slot, source } = self.area.running() {
            let _ = writeln!(o, "running      slot {slot} ({source})");
        }
        let _ = writeln!(o, "{}", health_line(self.area.health()));
        o
    }
}

/// For a state area that does not read: the JSON object `status --json`
/// prints (target, the error, and what each copy looks like).
pub fn diagnosis_json(target: &str, error: &str, health: &RecordHealth) -> String {
    format!(
        "{{\"target\":{},\"error\":{},\"records\":{}}}",
        json_str(target),
        json_str(error),
        health_json(health)
    )
}

fn running_json(r: &Running) -> String {
    match r {
        Running::Elsewhere => "null".into(),
        Running::Slot { slot, source } => {
            format!("{{\"slot\":\"{slot}\",\"source\":{}}}", json_str(source))
        }
        Running::Unknown(why) => format!("{{\"unknown\":{}}}", json_str(why)),
    }
}

/// One line on the record's two copies (the human form of `records`).
pub fn health_line(r: &RecordHealth) -> String {
    let copy = |c: &Result<u64, Invalid>| match c {
        Ok(seq) => format!("seq {seq}"),
        Err(e) => e.to_string(),
    };
    format!(
        "record       {:<11} copy 0: {}, copy 1: {}",
        r.kind.name(),
        copy(&r.copies[0]),
        copy(&r.copies[1])
    )
}

fn health_json(r: &RecordHealth) -> String {
    let copy = |c: &Result<u64, Invalid>| match c {
        Ok(seq) => format!("{{\"valid\":true,\"seq\":{seq}}}"),
        Err(e) => format!(
            "{{\"valid\":false,\"reason\":{}}}",
            json_str(&e.to_string())
        ),
    };
    // One record since state-area format 2; still a list for readers of
    // the old three-record output.
    format!(
        "[{{\"kind\":\"{}\",\"copies\":[{},{}],\"newest\":{}}}]",
        r.kind.name(),
        copy(&r.copies[0]),
        copy(&r.copies[1]),
        r.newest.map_or_else(|| "null".into(), |n| n.to_string())
    )
}

#[cfg(test)]
mod tests {
    use super::json_str;

    #[test]
    fn strings_are_escaped() {
        assert_eq!(json_str("a\"b\\c\n\u{1}é"), "\"a\\\"b\\\\c\\n\\u0001é\"");
    }
}
