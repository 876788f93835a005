//! The A/B boot state: which slot is active, which is pending with how
//! many tries, the rollback floor, and what is known about each slot; the
//! decisions a PID-1 updater takes from it at every boot.

use std::ops::Range;

use crate::codec::{get_str, get_u64, put_str};
use crate::layout::{Slot, LABEL_LEN};
use crate::{Error, Result};

/// Life cycle of a slot's content.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlotState {
    /// Nothing known to be there.
    Empty,
    /// Being written (or a write was interrupted): never bootable.
    Updating,
    /// Written, synced and verified: may be made pending or active.
    Complete,
}

impl SlotState {
    pub fn name(self) -> &'static str {
        match self {
            SlotState::Empty => "empty",
            SlotState::Updating => "updating",
            SlotState::Complete => "complete",
        }
    }
}

/// What the boot state knows about one slot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlotInfo {
    pub state: SlotState,
    /// Payload version of the image in (or going into) the slot.
    pub version: u64,
    /// SHA-256 of that image's signed head (all zero: unknown, e.g. the
    /// factory image).
    pub image_id: [u8; 32],
    pub label: String,
    /// This image was tried (pending) and the device fell back from it
    /// (tries ran out, or the trial was abandoned). Set by fallback,
    /// cleared when the slot is written again, committed, scheduled or
    /// confirmed: the PID-1 updater never re-applies such an image (no
    /// reboot loop), but does finish an apply that only lacks its commit.
    pub fell_back: bool,
}

/// Slot-info flag bit: [`SlotInfo::fell_back`].
pub(crate) const FLAG_FELL_BACK: u8 = 1;

impl SlotInfo {
    pub fn empty() -> SlotInfo {
        SlotInfo {
            state: SlotState::Empty,
            version: 0,
            image_id: [0; 32],
            label: String::new(),
            fell_back: false,
        }
    }

    pub(crate) fn encode(&self, e: &mut [u8]) {
        e[0] = match self.state {
            SlotState::Empty => 0,
            SlotState::Updating => 1,
            SlotState::Complete => 2,
        };
        e[1] = if self.fell_back { FLAG_FELL_BACK } else { 0 };
        e[8..16].copy_from_slice(&self.version.to_le_bytes());
        e[16..48].copy_from_slice(&self.image_id);
        put_str(&mut e[48..48 + LABEL_LEN], &self.label);
    }

    pub(crate) fn decode(e: &[u8]) -> Option<SlotInfo> {
        let state = match e.first()? {
            0 => SlotState::Empty,
            1 => SlotState::Updating,
            2 => SlotState::Complete,
            _ => return None,
        };
        let flags = *e.get(1)?;
        if flags & !FLAG_FELL_BACK != 0
            || e.get(2..8)?.iter().chain(e.get(112..128)?).any(|&b| b != 0)
        {
            return None;
        }
        Some(SlotInfo {
            state,
            version: get_u64(e, 8)?,
            image_id: e.get(16..48)?.try_into().ok()?,
            label: get_str(e.get(48..48 + LABEL_LEN)?)?,
            fell_back: flags & FLAG_FELL_BACK != 0,
        })
    }
}

/// Whether an active slot that cannot be booted may give way to the other
/// slot when that one's version is below the rollback floor (the board's
/// `fallback_below_floor`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FallbackBelowFloor {
    /// Never: the bootstrap waits in recovery for a signed image instead.
    #[default]
    Refuse,
    /// Boot it (a rollback the device then reports in `status`).
    Allow,
}

impl FallbackBelowFloor {
    pub fn name(self) -> &'static str {
        match self {
            FallbackBelowFloor::Refuse => "refuse",
            FallbackBelowFloor::Allow => "allow",
        }
    }
}

impl std::str::FromStr for FallbackBelowFloor {
    type Err = Error;
    fn from_str(s: &str) -> Result<FallbackBelowFloor> {
        match s {
            "refuse" => Ok(FallbackBelowFloor::Refuse),
            "allow" => Ok(FallbackBelowFloor::Allow),
            _ => Err(Error::InvalidInput {
                what: "fallback_below_floor",
                value: s.to_string(),
                reason: "expected refuse or allow".into(),
            }),
        }
    }
}

/// The A/B boot state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BootState {
    /// The slot that boots when nothing is being tried.
    pub active: Slot,
    /// A complete slot to try on the next boots.
    pub pending: Option<Slot>,
    /// Boots of the pending slot left before falling back.
    pub tries_left: u8,
    /// The active slot was confirmed good since it became active.
    pub confirmed: bool,
    /// Lowest payload version this device accepts (raised on confirm).
    pub rollback_floor: u64,
    /// Indexed by [`Slot::index`].
    pub slots: [SlotInfo; 2],
}

/// What [`BootState::boot_attempt`] decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BootDecision {
    pub slot: Slot,
    /// This is a trial boot of the pending slot.
    pub trial: bool,
    /// A pending slot whose tries ran out (or that was not complete) was
    /// dropped, and the active slot boots instead.
    pub fell_back_from: Option<Slot>,
}

pub(crate) const BOOT_PAYLOAD_LEN: usize = 16 + 2 * 128;

impl BootState {
    /// A fresh device: `active` holds a trusted, confirmed factory image of
    /// `version`; the other slot is empty.
    pub fn initial(active: Slot, version: u64, label: &str) -> Result<BootState> {
        check_label(label)?;
        let mut slots = [SlotInfo::empty(), SlotInfo::empty()];
        slots[active.index()] = SlotInfo {
            state: SlotState::Complete,
            version,
            image_id: [0; 32],
            label: label.to_string(),
            fell_back: false,
        };
        Ok(BootState {
            active,
            pending: None,
            tries_left: 0,
            confirmed: true,
            rollback_floor: version,
            slots,
        })
    }

    pub fn slot(&self, s: Slot) -> &SlotInfo {
        &self.slots[s.index()]
    }

    pub fn slot_mut(&mut self, s: Slot) -> &mut SlotInfo {
        &mut self.slots[s.index()]
    }

    /// The slot an apply writes when none is named.
    pub fn inactive(&self) -> Slot {
        self.active.other()
    }

    /// Marks `slot` as being written with `info`'s image. The slot stops
    /// being pending: a slot is never bootable while it is written.
    pub fn mark_updating(&mut self, slot: Slot, version: u64, image_id: [u8; 32], label: &str) {
        if self.pending == Some(slot) {
            self.pending = None;
            self.tries_left = 0;
        }
        *self.slot_mut(slot) = SlotInfo {
            state: SlotState::Updating,
            version,
            image_id,
            label: label.to_string(),
            fell_back: false,
        };
    }

    /// The end of an apply, as one change: `slot` (its data durable) is
    /// complete, no longer marked as fallen back, and with `activate`
    /// pending with `tries` trial boots. Persisted by
    /// [`StateArea::commit`](crate::StateArea::commit) in a single record write together with the
    /// idle journal, so no power cut can leave a complete slot that lost
    /// its activation.
    pub fn commit(&mut self, slot: Slot, activate: bool, tries: u8) -> Result<()> {
        if slot == self.active {
            return Err(Error::ActiveSlot(slot.letter()));
        }
        let info = self.slot_mut(slot);
        info.state = SlotState::Complete;
        info.fell_back = false;
        if activate {
            self.set_pending(slot, tries)?;
        }
        Ok(())
    }

    /// Schedules trial boots of `slot`, which must be complete and not the
    /// active slot.
    pub fn set_pending(&mut self, slot: Slot, tries: u8) -> Result<()> {
        let st = self.slot(slot).state;
        if st != SlotState::Complete {
            return Err(Error::NotComplete {
                slot: slot.letter(),
                state: st.name(),
            });
        }
        if slot == self.active {
            return Err(Error::ActiveSlot(slot.letter()));
        }
        if tries == 0 {
            return Err(Error::InvalidInput {
                what: "tries",
                value: "0".into(),
                reason: "a pending slot needs at least one try".into(),
            });
        }
        self.pending = Some(slot);
        self.tries_left = tries;
        self.slot_mut(slot).fell_back = false;
        Ok(())
    }

    /// Called once per boot, before choosing the root: spends one try of
    /// the pending slot, or drops it when none are left. The caller must
    /// persist the result before booting (see [`StateArea::boot_attempt`](crate::StateArea::boot_attempt)).
    pub fn boot_attempt(&mut self) -> BootDecision {
        let active = self.active;
        match self.pending {
            Some(p) if p != active && self.slot(p).state == SlotState::Complete => {
                if self.tries_left > 0 {
                    self.tries_left -= 1;
                    BootDecision {
                        slot: p,
                        trial: true,
                        fell_back_from: None,
                    }
                } else {
                    self.pending = None;
                    self.slot_mut(p).fell_back = true;
                    BootDecision {
                        slot: active,
                        trial: false,
                        fell_back_from: Some(p),
                    }
                }
            }
            Some(p) => {
                // Defensive: a pending slot that is not complete is never
                // booted, whatever wrote this record.
                self.pending = None;
                self.tries_left = 0;
                self.slot_mut(p).fell_back = true;
                BootDecision {
                    slot: active,
                    trial: false,
                    fell_back_from: Some(p),
                }
            }
            None => BootDecision {
                slot: active,
                trial: false,
                fell_back_from: None,
            },
        }
    }

    /// The running system (booted from `booted`) declares itself good. If
    /// it is the pending slot, it becomes active; the rollback floor rises
    /// to its version.
    pub fn confirm(&mut self, booted: Slot) -> Result<()> {
        if self.pending == Some(booted) && self.slot(booted).state == SlotState::Complete {
            self.active = booted;
            self.pending = None;
            self.tries_left = 0;
        } else if self.active != booted {
            return Err(Error::NotBooted(booted.letter()));
        }
        self.slot_mut(booted).fell_back = false;
        self.confirmed = true;
        self.rollback_floor = self.rollback_floor.max(self.slot(booted).version);
        Ok(())
    }

    /// Abandons the pending slot (e.g. its health check failed, or it
    /// could not be mounted): the active slot boots next, and the slot is
    /// marked as fallen back.
    pub fn fallback(&mut self) {
        if let Some(p) = self.pending.take() {
            self.slot_mut(p).fell_back = true;
        }
        self.tries_left = 0;
    }

    /// The active slot cannot be booted (its filesystem does not mount,
    /// its init is missing) and the other slot is complete: the other slot
    /// becomes active, not yet confirmed, and anything pending is dropped.
    /// The abandoned slot is marked empty (its contents are not to be
    /// trusted, so it is never booted again and an update may rewrite it,
    /// even with the image it held) and fallen back; its version, label
    /// and image id stay for `status`. The rollback floor is kept, never
    /// lowered: it governs what may be installed.
    ///
    /// A slot below the rollback floor is not taken (AVB's rule: breaking
    /// the new slot must not be a way to roll back) unless `below_floor`
    /// allows it; the device then runs below its floor, which
    /// [`Self::below_floor`] tells from then on. Returns the new active
    /// slot.
    pub fn abandon_active(&mut self, below_floor: FallbackBelowFloor) -> Result<Slot> {
        let other = self.active.other();
        let info = self.slot(other);
        if info.state != SlotState::Complete {
            return Err(Error::NotComplete {
                slot: other.letter(),
                state: info.state.name(),
            });
        }
        if info.version < self.rollback_floor && below_floor == FallbackBelowFloor::Refuse {
            return Err(Error::BelowFloor {
                slot: other.letter(),
                version: info.version,
                floor: self.rollback_floor,
            });
        }
        let old = self.active;
        let info = self.slot_mut(old);
        info.state = SlotState::Empty;
        info.fell_back = true;
        self.active = other;
        self.pending = None;
        self.tries_left = 0;
        self.confirmed = false;
        Ok(other)
    }

    /// The active slot's version is below the rollback floor: only an
    /// [`Self::abandon_active`] with [`FallbackBelowFloor::Allow`] leaves
    /// the device so (confirming raises the floor to the confirmed slot's
    /// version, and an apply never goes below it).
    pub fn below_floor(&self) -> bool {
        self.slot(self.active).version < self.rollback_floor
    }

    pub(crate) fn encode(&self, p: &mut [u8]) {
        p[0] = self.active.to_byte();
        p[1] = self.pending.map_or(0, Slot::to_byte);
        p[2] = self.tries_left;
        p[3] = u8::from(self.confirmed);
        p[8..16].copy_from_slice(&self.rollback_floor.to_le_bytes());
        self.slots[0].encode(&mut p[16..144]);
        self.slots[1].encode(&mut p[144..272]);
    }

    pub(crate) fn decode(p: &[u8]) -> Result<BootState> {
        let bad = |m: &str| Error::BadStateArea(format!("boot state: {m}"));
        if p.len() != BOOT_PAYLOAD_LEN {
            return Err(bad("wrong length"));
        }
        let pending = match p[1] {
            0 => None,
            b => Some(Slot::from_byte(b).ok_or_else(|| bad("bad pending slot"))?),
        };
        if p[3] > 1 || p[4..8].iter().any(|&b| b != 0) {
            return Err(bad("bad flags or reserved bytes"));
        }
        let slot = |r: Range<usize>| SlotInfo::decode(&p[r]).ok_or_else(|| bad("bad slot entry"));
        Ok(BootState {
            active: Slot::from_byte(p[0]).ok_or_else(|| bad("bad active slot"))?,
            pending,
            tries_left: p[2],
            confirmed: p[3] == 1,
            rollback_floor: get_u64(p, 8).unwrap_or(0),
            slots: [slot(16..144)?, slot(144..272)?],
        })
    }
}

pub(crate) fn check_label(label: &str) -> Result<()> {
    if label.len() > LABEL_LEN || label.contains('\0') {
        return Err(Error::InvalidInput {
            what: "version label",
            value: label.to_string(),
            reason: format!("at most {LABEL_LEN} bytes, no NUL"),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn complete(b: &mut BootState, s: Slot, version: u64) {
        *b.slot_mut(s) = SlotInfo {
            state: SlotState::Complete,
            version,
            image_id: [1; 32],
            label: String::new(),
            fell_back: false,
        };
    }

    #[test]
    fn fell_back_is_explicit() {
        let mut b = BootState::initial(Slot::A, 1, "").unwrap();
        b.mark_updating(Slot::B, 2, [2; 32], "");
        b.commit(Slot::B, true, 1).unwrap();
        assert!(!b.slot(Slot::B).fell_back);
        assert!(b.boot_attempt().trial);
        assert!(!b.slot(Slot::B).fell_back, "still trying");
        let d = b.boot_attempt();
        assert_eq!(d.fell_back_from, Some(Slot::B));
        assert!(b.slot(Slot::B).fell_back);
        // Survives an encode/decode, and is not inferred from state alone:
        // complete + not pending + flag clear means "commit not done".
        let mut p = vec![0u8; BOOT_PAYLOAD_LEN];
        b.encode(&mut p);
        assert_eq!(BootState::decode(&p).unwrap(), b);
        // A fresh apply of the slot clears it; so does a commit.
        b.mark_updating(Slot::B, 3, [3; 32], "");
        assert!(!b.slot(Slot::B).fell_back);
        b.commit(Slot::B, true, 1).unwrap();
        b.fallback();
        assert!(b.slot(Slot::B).fell_back && b.pending.is_none());
        b.set_pending(Slot::B, 1).unwrap();
        assert!(!b.slot(Slot::B).fell_back, "scheduled again by hand");
        // Unknown flag bits are refused.
        let mut p = vec![0u8; BOOT_PAYLOAD_LEN];
        b.encode(&mut p);
        p[16 + 1] = 2;
        assert!(BootState::decode(&p).is_err());
    }

    #[test]
    fn pending_slot_boots_its_tries_then_falls_back() {
        let mut b = BootState::initial(Slot::A, 1, "").unwrap();
        assert!(matches!(
            b.set_pending(Slot::B, 2),
            Err(Error::NotComplete { .. })
        ));
        complete(&mut b, Slot::B, 2);
        assert!(matches!(
            b.set_pending(Slot::A, 2),
            Err(Error::ActiveSlot('A'))
        ));
        b.set_pending(Slot::B, 2).unwrap();
        let d1 = b.boot_attempt();
        let d2 = b.boot_attempt();
        let d3 = b.boot_attempt();
        assert_eq!((d1.slot, d1.trial), (Slot::B, true));
        assert_eq!((d2.slot, d2.trial), (Slot::B, true));
        assert_eq!(d3.slot, Slot::A);
        assert_eq!(d3.fell_back_from, Some(Slot::B));
        assert_eq!(b.pending, None);
        assert_eq!(b.boot_attempt().slot, Slot::A);
        assert_eq!(b.active, Slot::A);
    }

    #[test]
    fn confirm_promotes_the_pending_slot_and_raises_the_floor() {
        let mut b = BootState::initial(Slot::A, 1, "").unwrap();
        complete(&mut b, Slot::B, 5);
        b.set_pending(Slot::B, 3).unwrap();
        assert_eq!(b.boot_attempt().slot, Slot::B);
        b.confirm(Slot::B).unwrap();
        assert_eq!((b.active, b.pending, b.rollback_floor), (Slot::B, None, 5));
        assert_eq!(b.boot_attempt().slot, Slot::B);
        // A slot that is neither active nor pending cannot confirm.
        assert!(matches!(b.confirm(Slot::A), Err(Error::NotBooted('A'))));
    }

    #[test]
    fn an_unbootable_active_slot_is_abandoned_for_a_complete_other() {
        let mut b = BootState::initial(Slot::A, 7, "factory").unwrap();
        // Nothing to go to: refused, nothing changes.
        let before = b.clone();
        assert!(matches!(
            b.abandon_active(FallbackBelowFloor::Allow),
            Err(Error::NotComplete { slot: 'B', .. })
        ));
        b.mark_updating(Slot::B, 8, [8; 32], "");
        assert!(b.abandon_active(FallbackBelowFloor::Allow).is_err());
        assert_eq!(b.slot(Slot::A), before.slot(Slot::A));
        // B complete and even pending: B becomes active, unconfirmed.
        complete(&mut b, Slot::B, 5);
        b.set_pending(Slot::B, 2).unwrap();
        // B (5) is below the floor (7): refused by default, nothing changes.
        let before = b.clone();
        assert!(matches!(
            b.abandon_active(FallbackBelowFloor::Refuse),
            Err(Error::BelowFloor {
                slot: 'B',
                version: 5,
                floor: 7
            })
        ));
        assert_eq!(b, before);
        assert!(!b.below_floor());
        // Allowed: B becomes active, and the device says it runs below its floor.
        assert_eq!(
            b.abandon_active(FallbackBelowFloor::Allow).unwrap(),
            Slot::B
        );
        assert!(b.below_floor());
        assert_eq!(
            (
                b.active,
                b.pending,
                b.tries_left,
                b.confirmed,
                b.rollback_floor
            ),
            (Slot::B, None, 0, false, 7)
        );
        let a = b.slot(Slot::A);
        assert_eq!(
            (a.state, a.fell_back, a.version),
            (SlotState::Empty, true, 7)
        );
        // A is never booted again and cannot be made pending; B boots.
        assert!(b.set_pending(Slot::A, 1).is_err());
        assert_eq!(b.boot_attempt().slot, Slot::B);
        b.confirm(Slot::B).unwrap();
        assert!(b.confirmed);
        assert!(b.below_floor(), "confirming does not lower the floor");
        // At or above the floor, the default is enough.
        let mut b = BootState::initial(Slot::A, 7, "").unwrap();
        complete(&mut b, Slot::B, 7);
        assert_eq!(
            b.abandon_active(FallbackBelowFloor::Refuse).unwrap(),
            Slot::B
        );
        assert!(!b.below_floor());
    }

    #[test]
    fn updating_slot_is_never_booted() {
        let mut b = BootState::initial(Slot::A, 1, "").unwrap();
        complete(&mut b, Slot::B, 2);
        b.set_pending(Slot::B, 3).unwrap();
        b.mark_updating(Slot::B, 3, [2; 32], "");
        assert_eq!(b.pending, None);
        // Even a record claiming otherwise (written by something else).
        b.pending = Some(Slot::B);
        b.tries_left = 3;
        let d = b.boot_attempt();
        assert_eq!((d.slot, d.fell_back_from), (Slot::A, Some(Slot::B)));
    }
}
