//! The store's manifest: a small file beside sled's own (`incidentd.manifest` in the store
//! directory) that records the highest incident id and outbox sequence number ever made
//! durable. sled reads a log with a damaged record as if it ended there, and a deleted or
//! zeroed `db` file as a new, empty store; either would silently start with missing incidents
//! and give their ids out again. The manifest is how opening tells: its counters may never be
//! ahead of the store's.
//!
//! Two 32-byte slots, written alternately in place (`pwrite` + `fdatasync`), each
//! `magic(8) next_id(8) next_seq(8) checksum(8)`: a write torn by a crash leaves the other
//! slot valid, and a slot whose checksum does not match is ignored.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use sha2::{Digest, Sha256};

/// The manifest's file name inside the store directory.
pub const FILE_NAME: &str = "incidentd.manifest";

const MAGIC: &[u8; 8] = b"INCDMAN1";
const SLOT: usize = 32;

/// What the manifest says was made durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Marks {
    /// The id the next new incident gets: every id below it was given out.
    pub next_id: u64,
    /// Every outbox sequence number below it was given out.
    pub next_seq: u64,
}

fn checksum(body: &[u8]) -> [u8; 8] {
    let d = Sha256::digest(body);
    d[..8].try_into().expect("8 bytes")
}

fn encode(m: Marks) -> [u8; SLOT] {
    let mut slot = [0u8; SLOT];
    slot[..8].copy_from_slice(MAGIC);
    slot[8..16].copy_from_slice(&m.next_id.to_be_bytes());
    slot[16..24].copy_from_slice(&m.next_seq.to_be_bytes());
    let sum = checksum(&slot[..24]);
    slot[24..].copy_from_slice(&sum);
    slot
}

fn decode(slot: &[u8]) -> Option<Marks> {
    if slot.len() < SLOT || &slot[..8] != MAGIC || slot[24..SLOT] != checksum(&slot[..24]) {
        return None;
    }
    Some(Marks {
        next_id: u64::from_be_bytes(slot[8..16].try_into().ok()?),
        next_seq: u64::from_be_bytes(slot[16..24].try_into().ok()?),
    })
}

pub fn path(store: &Path) -> PathBuf {
    store.join(FILE_NAME)
}

/// Reads the manifest: `Ok(None)` when there is none, `Err` when it exists but no slot is
/// valid (the manifest itself is damaged).
pub fn read(store: &Path) -> Result<Option<Marks>, String> {
    let p = path(store);
    let bytes = match std::fs::read(&p) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read {}: {e}", p.display())),
    };
    let slots: Vec<Marks> = bytes.chunks(SLOT).filter_map(decode).collect();
    slots
        .into_iter()
        .max_by_key(|m| (m.next_id, m.next_seq))
        .map(Some)
        .ok_or_else(|| format!("{} is damaged (no valid record)", p.display()))
}

/// An open manifest, written as the store's counters advance.
pub struct Manifest {
    file: File,
    /// What was written last, and which slot comes next.
    state: Mutex<(Marks, u64)>,
}

impl Manifest {
    /// Opens (or creates) the manifest with `marks` as its first content when it is new.
    pub fn open(store: &Path, current: Marks) -> std::io::Result<Manifest> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path(store))?;
        let m = Manifest {
            file,
            state: Mutex::new((Marks::default(), 0)),
        };
        m.advance(current)?;
        // Both slots written once, so a later torn write always leaves a valid one.
        m.advance(current)?;
        if let Ok(dir) = File::open(store) {
            let _ = dir.sync_all();
        }
        Ok(m)
    }

    /// Records `marks` (durably) unless they are not ahead of what was written.
    pub fn advance(&self, marks: Marks) -> std::io::Result<()> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let (written, slot) = *state;
        let merged = Marks {
            next_id: marks.next_id.max(written.next_id),
            next_seq: marks.next_seq.max(written.next_seq),
        };
        if merged == written && slot >= 2 {
            return Ok(());
        }
        self.file
            .write_at(&encode(merged), (slot % 2) * SLOT as u64)?;
        self.file.sync_data()?;
        *state = (merged, slot + 1);
        Ok(())
    }

    pub fn marks(&self) -> Marks {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_torn_or_damaged_slot_leaves_the_other() {
        let dir = tempfile::tempdir().unwrap();
        let m = Manifest::open(
            dir.path(),
            Marks {
                next_id: 5,
                next_seq: 9,
            },
        )
        .unwrap();
        m.advance(Marks {
            next_id: 7,
            next_seq: 12,
        })
        .unwrap();
        assert_eq!(
            read(dir.path()).unwrap(),
            Some(Marks {
                next_id: 7,
                next_seq: 12
            })
        );
        // Going backwards is never written.
        m.advance(Marks {
            next_id: 3,
            next_seq: 1,
        })
        .unwrap();
        assert_eq!(
            m.marks(),
            Marks {
                next_id: 7,
                next_seq: 12
            }
        );
        // Damage the newest slot (slots alternate: open wrote 0 and 1, the advance 0 again):
        // the older one is read.
        let mut bytes = std::fs::read(path(dir.path())).unwrap();
        bytes[10] ^= 0xff;
        std::fs::write(path(dir.path()), &bytes).unwrap();
        assert_eq!(
            read(dir.path()).unwrap(),
            Some(Marks {
                next_id: 5,
                next_seq: 9
            })
        );
        // Both damaged: an error, not "no manifest".
        bytes[SLOT + 10] ^= 0xff;
        std::fs::write(path(dir.path()), &bytes).unwrap();
        assert!(read(dir.path()).is_err());
        std::fs::remove_file(path(dir.path())).unwrap();
        assert_eq!(read(dir.path()).unwrap(), None);
    }
}
