//! The bytes of the write journal (`STORE/.envelopefs/journal`, FORMAT.md "Write journal"):
//! the file header and the slot headers, little-endian. What the journal does with them is in
//! [`crate::store::journal`].

use super::Id16;

/// First bytes of a journal file.
pub const MAGIC: &[u8; 8] = b"EFSJRNL1";
/// Bytes before the first slot.
pub const FILE_HEADER: u64 = 4096;
/// Bytes of a slot before its saved data.
pub const SLOT_HEADER: usize = 64;

/// Slot state (the first 4 bytes of a slot, stored atomically): free.
pub const FREE: u32 = 0;
/// Restore: write the saved bytes at `saved_off`, then set the length to `restore_len`
/// (undoes a change if the old bytes were saved, completes it if the new ones were).
pub const UNDO: u32 = 1;
/// Redo a cut: set the length to `restore_len`.
pub const TRUNCATE: u32 = 2;

fn le64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

fn le32(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

/// The file header: magic, slot count, zero, slot size, boot id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalHead {
    /// Slots in the file.
    pub slots: u32,
    /// Bytes per slot (a multiple of 4096).
    pub slot_size: u64,
    /// The boot id of the kernel that wrote the journal.
    pub boot_id: [u8; 16],
}

impl JournalHead {
    /// Bytes of the header that carry something (the rest up to [`FILE_HEADER`] is zero).
    pub const LEN: usize = 40;
    /// Bytes that give the layout (magic, slot count, slot size).
    pub const LAYOUT_LEN: usize = 24;

    /// The header's bytes.
    pub fn encode(&self) -> [u8; Self::LEN] {
        let mut h = [0u8; Self::LEN];
        h[..8].copy_from_slice(MAGIC);
        h[8..12].copy_from_slice(&self.slots.to_le_bytes());
        h[16..24].copy_from_slice(&self.slot_size.to_le_bytes());
        h[24..40].copy_from_slice(&self.boot_id);
        h
    }

    /// The layout (slot count, slot size) from the first [`Self::LAYOUT_LEN`] bytes: None for a
    /// journal never set up (all zero), an error for a bad magic.
    pub fn decode_layout(b: &[u8]) -> Result<Option<(u32, u64)>, &'static str> {
        if b.len() < Self::LAYOUT_LEN || b[..Self::LAYOUT_LEN].iter().all(|&x| x == 0) {
            return Ok(None);
        }
        if &b[..8] != MAGIC {
            return Err("bad magic (not a journal, or damaged)");
        }
        Ok(Some((le32(b, 8), le64(b, 16))))
    }
}

/// A slot header: the state word, then what to restore and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotHeader {
    /// [`FREE`], [`UNDO`] or [`TRUNCATE`] (other values: damage).
    pub state: u32,
    /// Device of the backing file.
    pub dev: u64,
    /// Inode of the backing file.
    pub ino: u64,
    /// The object id in the file's preamble.
    pub object_id: Id16,
    /// Where the saved bytes go.
    pub saved_off: u64,
    /// How many bytes were saved (after the header).
    pub saved_len: u64,
    /// The backing length to restore.
    pub restore_len: u64,
}

impl SlotHeader {
    /// Decodes the first [`SLOT_HEADER`] bytes of a slot.
    pub fn decode(h: &[u8; SLOT_HEADER]) -> SlotHeader {
        let mut object_id = [0u8; 16];
        object_id.copy_from_slice(&h[24..40]);
        SlotHeader {
            state: le32(h, 0),
            dev: le64(h, 8),
            ino: le64(h, 16),
            object_id,
            saved_off: le64(h, 40),
            saved_len: le64(h, 48),
            restore_len: le64(h, 56),
        }
    }

    /// Writes everything but the state word (bytes 8..64; the journal stores the state itself,
    /// atomically, once the rest is in place). Bytes 4..8 stay zero.
    pub fn encode_body(&self, h: &mut [u8; SLOT_HEADER]) {
        h[4..8].fill(0);
        h[8..16].copy_from_slice(&self.dev.to_le_bytes());
        h[16..24].copy_from_slice(&self.ino.to_le_bytes());
        h[24..40].copy_from_slice(&self.object_id);
        h[40..48].copy_from_slice(&self.saved_off.to_le_bytes());
        h[48..56].copy_from_slice(&self.saved_len.to_le_bytes());
        h[56..64].copy_from_slice(&self.restore_len.to_le_bytes());
    }

    /// Changes the length to restore (a shrink's second phase).
    pub fn set_restore_len(h: &mut [u8; SLOT_HEADER], len: u64) {
        h[56..64].copy_from_slice(&len.to_le_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_round_trip_at_their_documented_offsets() {
        let head = JournalHead {
            slots: 8,
            slot_size: 270_336,
            boot_id: [7; 16],
        };
        let b = head.encode();
        assert_eq!(&b[..8], b"EFSJRNL1");
        assert_eq!(b[8..12], 8u32.to_le_bytes());
        assert_eq!(b[12..16], [0; 4]);
        assert_eq!(JournalHead::decode_layout(&b), Ok(Some((8, 270_336))));
        assert_eq!(JournalHead::decode_layout(&[0; 24]), Ok(None));
        assert!(JournalHead::decode_layout(b"NOTJRNL!\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0").is_err());

        let s = SlotHeader {
            state: UNDO,
            dev: 0x0102,
            ino: 0x0304,
            object_id: [9; 16],
            saved_off: 4124,
            saved_len: 4124,
            restore_len: 8248,
        };
        let mut h = [0xffu8; SLOT_HEADER];
        h[..4].copy_from_slice(&UNDO.to_le_bytes());
        s.encode_body(&mut h);
        assert_eq!(h[4..8], [0; 4]);
        assert_eq!(h[40..48], 4124u64.to_le_bytes());
        assert_eq!(SlotHeader::decode(&h), s);
        SlotHeader::set_restore_len(&mut h, 5);
        assert_eq!(SlotHeader::decode(&h).restore_len, 5);
    }
}
