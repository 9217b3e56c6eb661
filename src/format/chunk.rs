//! Chunk layout of an object's backing file, and the size and offset math.
//!
//! ```text
//! backing file = preamble (24 bytes) | chunk 0 | chunk 1 | ... | chunk n
//! preamble     = "EFSD" | version u16 LE | reserved u16 = 0 | object id (16)
//! chunk        = nonce (12) | ciphertext (len) | tag (16)
//! ```
//! Every chunk but the last holds exactly `chunk_size` plaintext bytes. The last chunk holds
//! fewer (possibly zero), so an object always ends in a short "final" chunk: truncating the
//! backing file at a chunk boundary leaves no short chunk and is detected. The AAD of each
//! chunk is `object id | chunk index u64 LE | final flag u8`.
//!
//! Names say which space a value lives in: `plain_*` is plaintext, `backing_*` is the file.

use super::{Id16, FORMAT_VERSION};

/// Bytes of the per-file preamble.
pub const PREAMBLE_LEN: u64 = 24;
/// AES-GCM nonce bytes stored in front of each chunk.
pub const NONCE_LEN: usize = 12;
/// AES-GCM tag bytes stored after each chunk.
pub const TAG_LEN: usize = 16;
/// Per-chunk overhead in the backing file.
pub const CHUNK_OVERHEAD: u64 = (NONCE_LEN + TAG_LEN) as u64;
/// Bytes of a chunk's AAD.
pub const AAD_LEN: usize = 25;
/// Magic at the start of every backing file.
pub const PREAMBLE_MAGIC: &[u8; 4] = b"EFSD";

/// Smallest and largest chunk sizes a store may use (powers of two).
pub const MIN_CHUNK_SIZE: u32 = 4096;
/// See [`MIN_CHUNK_SIZE`].
pub const MAX_CHUNK_SIZE: u32 = 1 << 20;

/// Whether `n` is an allowed chunk size.
pub fn valid_chunk_size(n: u32) -> bool {
    n.is_power_of_two() && (MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&n)
}

/// The preamble bytes for an object.
pub fn preamble(object_id: &Id16) -> [u8; PREAMBLE_LEN as usize] {
    let mut p = [0u8; PREAMBLE_LEN as usize];
    p[..4].copy_from_slice(PREAMBLE_MAGIC);
    p[4..6].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    p[8..24].copy_from_slice(object_id);
    p
}

/// Parses a preamble: `Ok(object id)`, or `Err(reason)`.
pub fn parse_preamble(p: &[u8]) -> Result<Id16, String> {
    if p.len() < PREAMBLE_LEN as usize || &p[..4] != PREAMBLE_MAGIC {
        return Err("data preamble missing or bad magic".into());
    }
    let version = u16::from_le_bytes([p[4], p[5]]);
    if version != FORMAT_VERSION {
        return Err(format!("data format version {version} is not supported"));
    }
    let mut id = [0u8; 16];
    id.copy_from_slice(&p[8..24]);
    Ok(id)
}

/// The AAD of chunk `index`: object id | index u64 LE | final flag.
pub fn chunk_aad(object_id: &Id16, index: u64, is_final: bool) -> [u8; AAD_LEN] {
    let mut a = [0u8; AAD_LEN];
    a[..16].copy_from_slice(object_id);
    a[16..24].copy_from_slice(&index.to_le_bytes());
    a[24] = u8::from(is_final);
    a
}

/// Geometry of one store's chunks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    /// Plaintext bytes in every non-final chunk.
    pub chunk_size: u64,
}

impl Geometry {
    /// Geometry for a chunk size (already validated).
    pub fn new(chunk_size: u32) -> Self {
        Geometry {
            chunk_size: u64::from(chunk_size),
        }
    }

    /// Bytes one full chunk takes in the backing file.
    pub fn stride(&self) -> u64 {
        self.chunk_size + CHUNK_OVERHEAD
    }

    /// Index of the final (short) chunk of a plaintext of `plain_len` bytes.
    pub fn final_index(&self, plain_len: u64) -> u64 {
        plain_len / self.chunk_size
    }

    /// Plaintext bytes held by chunk `index` of a plaintext of `plain_len` bytes.
    pub fn chunk_plain_len(&self, index: u64, plain_len: u64) -> u64 {
        let last = self.final_index(plain_len);
        if index < last {
            self.chunk_size
        } else if index == last {
            plain_len % self.chunk_size
        } else {
            0
        }
    }

    /// Offset of chunk `index` in the backing file.
    pub fn backing_offset(&self, index: u64) -> u64 {
        PREAMBLE_LEN + index * self.stride()
    }

    /// Backing file size of a plaintext of `plain_len` bytes.
    pub fn backing_len(&self, plain_len: u64) -> u64 {
        let full = plain_len / self.chunk_size;
        PREAMBLE_LEN + full * self.stride() + (plain_len % self.chunk_size) + CHUNK_OVERHEAD
    }

    /// Plaintext size from the backing size alone, or `None` if no valid object has that
    /// backing size (a truncated or padded file).
    pub fn plain_len(&self, backing_len: u64) -> Option<u64> {
        let body = backing_len.checked_sub(PREAMBLE_LEN)?;
        let full = body / self.stride();
        let rest = body % self.stride();
        let last = rest.checked_sub(CHUNK_OVERHEAD)?;
        Some(full * self.chunk_size + last)
    }

    /// Plaintext size for `stat`: exact for valid files, a best effort for damaged ones
    /// (their reads fail with EIO, their size must still be something).
    pub fn plain_len_lossy(&self, backing_len: u64) -> u64 {
        match self.plain_len(backing_len) {
            Some(n) => n,
            None => {
                let body = backing_len.saturating_sub(PREAMBLE_LEN);
                (body / self.stride()) * self.chunk_size
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_round_trip() {
        for cs in [4096u32, 16384, 65536] {
            let g = Geometry::new(cs);
            let c = u64::from(cs);
            for p in [0, 1, c - 1, c, c + 1, 2 * c, 5 * c + 7, 10 << 20] {
                let b = g.backing_len(p);
                assert_eq!(g.plain_len(b), Some(p), "cs {cs} p {p}");
            }
        }
    }

    #[test]
    fn worked_examples_from_format_md() {
        let d = Geometry::new(4096);
        assert_eq!(d.backing_len(4095), 4147);
        assert_eq!(d.backing_len(4096), 4176);
        assert_eq!(d.backing_len(4097), 4177);
        let g = Geometry::new(16384);
        assert_eq!(g.backing_len(0), 52);
        assert_eq!(g.backing_len(1), 53);
        assert_eq!(g.backing_len(16384), 24 + 16412 + 28);
        assert_eq!(g.backing_len(16385), 24 + 16412 + 29);
    }

    #[test]
    fn truncation_at_chunk_boundary_is_not_a_valid_size() {
        let g = Geometry::new(4096);
        let b = g.backing_len(3 * 4096 + 10);
        // cut right after chunk 1: no final short chunk remains
        assert_eq!(g.plain_len(g.backing_offset(2)), None);
        assert!(g.plain_len(b).is_some());
        assert_eq!(g.plain_len(10), None);
    }

    proptest::proptest! {
        /// `plain_len` inverts `backing_len` exactly: every plaintext size has one backing
        /// size, and a backing size is valid only if some plaintext size produces it.
        #[test]
        fn plain_len_is_exactly_the_inverse_of_backing_len(
            shift in 12u32..=20,
            plain in 0u64..(1 << 40),
            backing in 0u64..(1 << 40),
        ) {
            let g = Geometry::new(1 << shift);
            proptest::prop_assert_eq!(g.plain_len(g.backing_len(plain)), Some(plain));
            match g.plain_len(backing) {
                Some(p) => proptest::prop_assert_eq!(g.backing_len(p), backing),
                None => {
                    // No valid size: the body ends inside a chunk's overhead.
                    let body = backing.checked_sub(PREAMBLE_LEN);
                    proptest::prop_assert!(body.is_none_or(|b| b % g.stride() < CHUNK_OVERHEAD));
                }
            }
            let last = g.final_index(plain);
            proptest::prop_assert!(g.chunk_plain_len(last, plain) < g.chunk_size);
        }
    }

    #[test]
    fn aad_bytes() {
        let a = chunk_aad(&[7u8; 16], 0x0102, true);
        assert_eq!(&a[16..24], &[2, 1, 0, 0, 0, 0, 0, 0]);
        assert_eq!(a[24], 1);
    }
}
