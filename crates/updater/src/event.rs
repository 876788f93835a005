//! What the engine reports while it works. The library never prints: the
//! CLI turns events into human lines or JSON, the PID-1 updater into its
//! console log.

use fwimage::KeyId;

use crate::bootstate::SlotState;
use crate::layout::Slot;

/// Stages of an apply, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Image head, signature, board, version, layout, busy check.
    Check,
    /// Full pass over the image: every CRC block and SHA-256. Announced
    /// a second time when a slot that already holds the image is read back
    /// (`verify_writes`); progress restarts from zero then.
    Verify,
    /// Streaming the data into the slot.
    Write,
    /// Marking the slot complete and pending.
    Commit,
}

impl Phase {
    pub fn name(self) -> &'static str {
        match self {
            Phase::Check => "check",
            Phase::Verify => "verify",
            Phase::Write => "write",
            Phase::Commit => "commit",
        }
    }
}

/// One report from the engine.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// The target as opened.
    Target {
        description: String,
    },
    Phase(Phase),
    /// The image passed the signature, board and version checks and fits.
    ImageAccepted {
        board: String,
        version: u64,
        label: String,
        key_id: KeyId,
        segments: usize,
        raw_bytes: u64,
        slot: Slot,
    },
    /// `done` of `total` raw bytes through `phase`.
    Progress {
        phase: Phase,
        done: u64,
        total: u64,
    },
    /// Something degraded or overridden, never silently.
    Warning(String),
    /// A delta plan: of `chunks` chunks still to write, `from_seed` are
    /// copied from the seed slot (their signed raw hashes matched it) and
    /// the rest, `fetch_bytes` stored bytes in `runs` ranges, are read
    /// from the image.
    DeltaPlan {
        seed: Slot,
        chunks: u64,
        from_seed: u64,
        fetch_bytes: u64,
        runs: usize,
    },
    /// Continuing an interrupted apply: raw bytes before (`segment`,
    /// `offset`) are already on the slot.
    Resume {
        segment: u32,
        offset: u64,
        skipped: u64,
    },
    /// A journal was found but could not be used; starting from zero.
    Restart {
        reason: String,
    },
    /// The slot already holds this image, complete.
    AlreadyComplete {
        slot: Slot,
    },
    /// Data up to (`segment`, `offset`) is durable (and read back when
    /// `verified`), and the journal says so.
    Checkpoint {
        segment: u32,
        offset: u64,
        done: u64,
        verified: bool,
    },
    SlotState {
        slot: Slot,
        state: SlotState,
    },
    Pending {
        slot: Slot,
        tries: u8,
    },
    /// A transaction ([`crate::txn`]) of `parts` images passed every check
    /// and goes into `slot`: `raw_bytes` over all parts.
    TransactionAccepted {
        parts: usize,
        version: u64,
        slot: Slot,
        raw_bytes: u64,
    },
    /// The delta plan of the parts still to write, summed (each part's
    /// [`Event::DeltaPlan`] follows again when it is written).
    TransactionPlan {
        seed: Slot,
        chunks: u64,
        from_seed: u64,
        fetch_bytes: u64,
    },
    /// Part `index` (from 0) of `count` is applied (`proving: false`) or
    /// read back (`proving: true`); the parts before it hold `raw_before`
    /// of the transaction's raw bytes.
    Part {
        index: usize,
        count: usize,
        raw_before: u64,
        proving: bool,
    },
}

impl Event {
    /// The one JSON object (one line) `fwpack apply --json` and
    /// `fwpack-updater apply --json` print for this event. Hand-written
    /// like [`crate::status`], so the device binary needs no serde.
    pub fn json(&self) -> String {
        use crate::status::json_str;
        match self {
            Event::Target { description } => format!(
                "{{\"event\":\"target\",\"description\":{}}}",
                json_str(description)
            ),
            Event::Phase(p) => format!("{{\"event\":\"phase\",\"phase\":\"{}\"}}", p.name()),
            Event::ImageAccepted {
                board,
                version,
                label,
                key_id,
                segments,
                raw_bytes,
                slot,
            } => format!(
                "{{\"event\":\"image\",\"board\":{},\"version\":{version},\"label\":{},\"key_id\":\"{}\",\"segments\":{segments},\"raw_bytes\":{raw_bytes},\"slot\":\"{slot}\"}}",
                json_str(board),
                json_str(label),
                key_id.full()
            ),
            Event::Progress { phase, done, total } => format!(
                "{{\"event\":\"progress\",\"phase\":\"{}\",\"done\":{done},\"total\":{total}}}",
                phase.name()
            ),
            Event::Warning(w) => {
                format!("{{\"event\":\"warning\",\"message\":{}}}", json_str(w))
            }
            Event::DeltaPlan {
                seed,
                chunks,
                from_seed,
                fetch_bytes,
                runs,
            } => format!(
                "{{\"event\":\"delta\",\"seed\":\"{seed}\",\"chunks\":{chunks},\"from_seed\":{from_seed},\"fetch_bytes\":{fetch_bytes},\"runs\":{runs}}}"
            ),
            Event::Resume {
                segment,
                offset,
                skipped,
            } => format!(
                "{{\"event\":\"resume\",\"segment\":{segment},\"offset\":{offset},\"skipped\":{skipped}}}"
            ),
            Event::Restart { reason } => {
                format!("{{\"event\":\"restart\",\"reason\":{}}}", json_str(reason))
            }
            Event::AlreadyComplete { slot } => {
                format!("{{\"event\":\"already_complete\",\"slot\":\"{slot}\"}}")
            }
            Event::Checkpoint {
                segment,
                offset,
                done,
                verified,
            } => format!(
                "{{\"event\":\"checkpoint\",\"segment\":{segment},\"offset\":{offset},\"done\":{done},\"verified\":{verified}}}"
            ),
            Event::SlotState { slot, state } => format!(
                "{{\"event\":\"slot_state\",\"slot\":\"{slot}\",\"state\":\"{}\"}}",
                state.name()
            ),
            Event::Pending { slot, tries } => {
                format!("{{\"event\":\"pending\",\"slot\":\"{slot}\",\"tries\":{tries}}}")
            }
            Event::TransactionAccepted {
                parts,
                version,
                slot,
                raw_bytes,
            } => format!(
                "{{\"event\":\"transaction\",\"parts\":{parts},\"version\":{version},\"slot\":\"{slot}\",\"raw_bytes\":{raw_bytes}}}"
            ),
            Event::TransactionPlan {
                seed,
                chunks,
                from_seed,
                fetch_bytes,
            } => format!(
                "{{\"event\":\"transaction_delta\",\"seed\":\"{seed}\",\"chunks\":{chunks},\"from_seed\":{from_seed},\"fetch_bytes\":{fetch_bytes}}}"
            ),
            Event::Part {
                index,
                count,
                raw_before,
                proving,
            } => format!(
                "{{\"event\":\"part\",\"index\":{index},\"count\":{count},\"raw_before\":{raw_before},\"proving\":{proving}}}"
            ),
        }
    }
}

impl crate::ApplyReport {
    /// The `result` line both CLIs print at the end of a successful
    /// `apply --json` (`image`: the source as given, `target`: the disk).
    /// `resumed_from` is `null` or `{"segment":S,"offset":O}`.
    pub fn json(&self, image: &str, target: &str) -> String {
        use crate::status::json_str;
        let id: String = self.image_id.iter().map(|b| format!("{b:02x}")).collect();
        let resumed = self.resumed_from.map_or("null".into(), |(s, o)| {
            format!("{{\"segment\":{s},\"offset\":{o}}}")
        });
        format!(
            "{{\"event\":\"result\",\"result\":\"ok\",\"image\":{},\"target\":{},\"slot\":\"{}\",\"image_id\":\"{id}\",\"board\":{},\"version\":{},\"label\":{},\"key_id\":\"{}\",\"segments\":{},\"raw_bytes\":{},\"bytes_written\":{},\"skipped_resume\":{},\"skipped_unchanged\":{},\"bytes_read_back\":{},\"checkpoints\":{},\"image_bytes_read\":{},\"bytes_from_seed\":{},\"resumed_from\":{resumed},\"already_complete\":{},\"pending\":{},\"direct_io\":{}}}",
            json_str(image),
            json_str(target),
            self.slot,
            json_str(&self.board),
            self.version,
            json_str(&self.label),
            self.key_id.full(),
            self.segments,
            self.raw_bytes,
            self.bytes_written,
            self.skipped_resume,
            self.skipped_unchanged,
            self.bytes_read_back,
            self.checkpoints,
            self.image_bytes_read,
            self.bytes_from_seed,
            self.already_complete,
            self.pending,
            self.direct_io,
        )
    }
}

/// The last line of a failed `apply --json` in both CLIs.
pub fn error_json(exit_code: i32, message: &str) -> String {
    format!(
        "{{\"event\":\"error\",\"exit_code\":{exit_code},\"message\":{}}}",
        crate::status::json_str(message)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_event_is_one_json_object() {
        let events = [
            Event::Target {
                description: "a \"disk\"\n".into(),
            },
            Event::Phase(Phase::Write),
            Event::Warning("w".into()),
            Event::Progress {
                phase: Phase::Verify,
                done: 1,
                total: 2,
            },
            Event::DeltaPlan {
                seed: Slot::A,
                chunks: 3,
                from_seed: 2,
                fetch_bytes: 9,
                runs: 1,
            },
            Event::Resume {
                segment: 0,
                offset: 4096,
                skipped: 4096,
            },
            Event::Restart { reason: "r".into() },
            Event::AlreadyComplete { slot: Slot::B },
            Event::Checkpoint {
                segment: 1,
                offset: 2,
                done: 3,
                verified: true,
            },
            Event::SlotState {
                slot: Slot::B,
                state: SlotState::Updating,
            },
            Event::Pending {
                slot: Slot::B,
                tries: 3,
            },
            Event::TransactionAccepted {
                parts: 2,
                version: 2,
                slot: Slot::B,
                raw_bytes: 5,
            },
            Event::TransactionPlan {
                seed: Slot::A,
                chunks: 3,
                from_seed: 1,
                fetch_bytes: 7,
            },
            Event::Part {
                index: 1,
                count: 2,
                raw_before: 4,
                proving: true,
            },
        ];
        for e in events {
            let j = e.json();
            assert!(j.starts_with("{\"event\":\"") && j.ends_with('}'), "{j}");
            assert!(!j.contains('\n'), "{j}");
        }
    }

    #[test]
    fn result_and_error_lines() {
        let mut r = crate::ApplyReport {
            slot: Slot::B,
            image_id: [0xab; 32],
            board: "b\"x".into(),
            version: 7,
            label: "v7".into(),
            key_id: fwimage::KeyId([1; 32]),
            segments: 2,
            raw_bytes: 10,
            bytes_written: 11,
            skipped_resume: 12,
            skipped_unchanged: 13,
            bytes_read_back: 14,
            image_bytes_read: 15,
            bytes_from_seed: 16,
            checkpoints: 17,
            resumed_from: None,
            already_complete: false,
            pending: true,
            direct_io: false,
        };
        let j = r.json("/tmp/u.fwi", "disk.img");
        assert!(
            j.starts_with("{\"event\":\"result\",\"result\":\"ok\","),
            "{j}"
        );
        assert!(j.contains("\"board\":\"b\\\"x\""), "{j}");
        assert!(j.contains("\"resumed_from\":null"), "{j}");
        assert!(
            j.contains(&format!("\"image_id\":\"{}\"", "ab".repeat(32))),
            "{j}"
        );
        r.resumed_from = Some((1, 65536));
        let j = r.json("-", "disk.img");
        assert!(
            j.contains("\"resumed_from\":{\"segment\":1,\"offset\":65536}"),
            "{j}"
        );
        assert_eq!(
            error_json(6, "bad\nchunk"),
            "{\"event\":\"error\",\"exit_code\":6,\"message\":\"bad\\nchunk\"}"
        );
    }
}
