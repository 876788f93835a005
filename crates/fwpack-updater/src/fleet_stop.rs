//! Stopping a running apply from outside the engine: the fleet client
//! wraps the image source, and a stop request makes its next read fail.
//! The engine then ends as it ends on any failed read: the slot stays
//! `updating` (never booted, never pending) and the journal keeps what is
//! durable. Two things ask for a stop: the delta plan over
//! `fleet_max_download` (known after the head and index, before the
//! first chunk of data is fetched), and a `cancelAction` for the action
//! seen by the watcher that polls while the download runs.

use std::io;
use std::ops::Range;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

use fwimage::ImageSource;

/// Why the apply was stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// The delta plan fetches more than `fleet_max_download`.
    Oversize,
    /// The server canceled the action.
    Cancel,
}

/// Shared between the source, the event handler and the cancel watcher.
#[derive(Clone, Default)]
pub struct StopFlag(Arc<AtomicU8>);

impl StopFlag {
    /// The first reason wins: a cancel after an oversize stop changes
    /// nothing the device did.
    pub fn stop(&self, why: Stop) {
        let v = match why {
            Stop::Oversize => 1,
            Stop::Cancel => 2,
        };
        let _ = self
            .0
            .compare_exchange(0, v, Ordering::SeqCst, Ordering::SeqCst);
    }

    pub fn get(&self) -> Option<Stop> {
        match self.0.load(Ordering::SeqCst) {
            1 => Some(Stop::Oversize),
            2 => Some(Stop::Cancel),
            _ => None,
        }
    }
}

/// An image source whose reads fail once a stop was asked for.
pub struct Stoppable<S> {
    pub inner: S,
    pub flag: StopFlag,
}

impl<S: ImageSource> ImageSource for Stoppable<S> {
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        if let Some(why) = self.flag.get() {
            // Not `Interrupted`: readers retry that kind.
            return Err(io::Error::other(match why {
                Stop::Oversize => "download stopped: over fleet_max_download",
                Stop::Cancel => "download stopped: the server canceled the action",
            }));
        }
        self.inner.read_at(offset, buf)
    }

    fn plan_reads(&mut self, runs: &[Range<u64>]) {
        self.inner.plan_reads(runs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_fail_after_a_stop_and_the_first_reason_wins() {
        let data = [7u8; 16];
        let flag = StopFlag::default();
        let mut s = Stoppable {
            inner: fwimage::MemSource(&data),
            flag: flag.clone(),
        };
        let mut b = [0u8; 4];
        s.read_at(0, &mut b).unwrap();
        assert_eq!(b, [7; 4]);
        flag.stop(Stop::Cancel);
        flag.stop(Stop::Oversize);
        assert_eq!(flag.get(), Some(Stop::Cancel));
        assert!(s.read_at(0, &mut b).is_err());
    }
}
