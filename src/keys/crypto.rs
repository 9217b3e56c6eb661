//! Cryptographic primitives: AES-256-GCM seal/open, DEK wrapping, the passphrase KDF.
//!
//! Key types zeroize on drop and implement no `Debug`, so they cannot end up in a log line.
//! All randomness comes from the OS CSPRNG (`getrandom`). Nonces and keys are parameters of
//! the pure functions here so golden tests can fix them.

use crate::error::{Error, Result};
use crate::format::chunk::TAG_LEN;
use crate::format::records::{KdfParams, WRAPPED_DEK_LEN};
use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use sha2::{Digest, Sha256};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

/// A 256-bit secret key (a DEK, a master key version, a sealing key or a customer key).
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct Key32([u8; 32]);

impl Key32 {
    /// Wraps raw bytes (the caller zeroizes its own copy).
    pub fn from_bytes(b: [u8; 32]) -> Self {
        Key32(b)
    }

    /// A fresh random key.
    pub fn random() -> Result<Self> {
        let mut k = Key32([0u8; 32]);
        fill_random(&mut k.0)?;
        Ok(k)
    }

    /// The key bytes. Never log or print them.
    pub fn expose(&self) -> &[u8; 32] {
        &self.0
    }

    /// The expanded AES-256-GCM key. aws-lc keeps the key schedule in memory it allocates
    /// itself and cleanses when the key is dropped (`OPENSSL_free` zeroes every allocation),
    /// so the expanded key is zeroized like the raw one.
    fn cipher(&self) -> Result<LessSafeKey> {
        let k = UnboundKey::new(&AES_256_GCM, &self.0)
            .map_err(|_| Error::InvalidArgument("AES-256-GCM refused a 32-byte key".into()))?;
        Ok(LessSafeKey::new(k))
    }
}

/// Fills `buf` from the OS CSPRNG.
pub fn fill_random(buf: &mut [u8]) -> Result<()> {
    getrandom::getrandom(buf).map_err(|e| {
        Error::io(
            "reading the OS random source",
            std::io::Error::other(e.to_string()),
        )
    })
}

/// Bytes of OS randomness kept per thread for chunk nonces (see [`fill_nonces`]).
const NONCE_POOL: usize = 4096;

thread_local! {
    /// Unused OS random bytes for nonces, and how many of them were handed out.
    static POOL: std::cell::RefCell<([u8; NONCE_POOL], usize)> =
        const { std::cell::RefCell::new(([0u8; NONCE_POOL], NONCE_POOL)) };
}

/// Fills `buf` with random bytes for chunk nonces: from the OS random source, read 4 KiB at a
/// time per thread instead of once per write (a random 4 KiB write used to make one
/// `getrandom` call for its single 12-byte nonce). Nonces are public, so the pool needs no
/// zeroizing; every byte is handed out once. Keys never come from here ([`fill_random`]).
pub fn fill_nonces(buf: &mut [u8]) -> Result<()> {
    if buf.len() > NONCE_POOL / 4 {
        return fill_random(buf);
    }
    POOL.with(|p| {
        let mut p = p.borrow_mut();
        let (pool, used) = &mut *p;
        if NONCE_POOL - *used < buf.len() {
            fill_random(pool)?;
            *used = 0;
        }
        buf.copy_from_slice(&pool[*used..*used + buf.len()]);
        *used += buf.len();
        Ok(())
    })
}

/// Random fixed-size bytes.
pub fn random_array<const N: usize>() -> Result<[u8; N]> {
    let mut a = [0u8; N];
    fill_random(&mut a)?;
    Ok(a)
}

/// Encrypts `buf` in place; returns the tag.
pub fn seal_in_place(
    key: &Key32,
    nonce: &[u8; 12],
    aad: &[u8],
    buf: &mut [u8],
) -> Result<[u8; 16]> {
    seal_with(&key.cipher()?, nonce, aad, buf)
}

fn seal_with(key: &LessSafeKey, nonce: &[u8], aad: &[u8], buf: &mut [u8]) -> Result<[u8; 16]> {
    let nonce = Nonce::try_assume_unique_for_key(nonce)
        .map_err(|_| Error::InvalidArgument("an AES-GCM nonce is 12 bytes".into()))?;
    let tag = key
        .seal_in_place_separate_tag(nonce, Aad::from(aad), buf)
        .map_err(|_| Error::InvalidArgument("AES-GCM refused the input length".into()))?;
    let mut out = [0u8; TAG_LEN];
    out.copy_from_slice(tag.as_ref());
    Ok(out)
}

/// Decrypts `buf` in place; `false` (and `buf` garbage) if authentication failed.
fn open_with(key: &LessSafeKey, nonce: &[u8], aad: &[u8], buf: &mut [u8], tag: &[u8]) -> bool {
    let Ok(nonce) = Nonce::try_assume_unique_for_key(nonce) else {
        return false;
    };
    tag.len() == TAG_LEN
        && key
            .open_in_place_separate_tag(nonce, Aad::from(aad), tag, buf)
            .is_ok()
}

/// Seals `plain` into `ciphertext | tag`.
pub fn seal(key: &Key32, nonce: &[u8; 12], aad: &[u8], plain: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(plain.len() + TAG_LEN);
    out.extend_from_slice(plain);
    let tag = seal_in_place(key, nonce, aad, &mut out)?;
    out.extend_from_slice(&tag);
    Ok(out)
}

/// Opens `ciphertext | tag`; `None` when authentication fails (deliberately opaque).
pub fn open(
    key: &Key32,
    nonce: &[u8; 12],
    aad: &[u8],
    sealed: &[u8],
) -> Option<Zeroizing<Vec<u8>>> {
    if sealed.len() < TAG_LEN {
        return None;
    }
    let (ct, tag) = sealed.split_at(sealed.len() - TAG_LEN);
    let mut buf = Zeroizing::new(ct.to_vec());
    let cipher = key.cipher().ok()?;
    open_with(&cipher, nonce, aad, buf.as_mut_slice(), tag).then_some(buf)
}

/// Wraps a DEK under a KEK with the encryption context as AAD.
pub fn wrap_dek(
    kek: &Key32,
    nonce: &[u8; 12],
    context: &[u8],
    dek: &Key32,
) -> Result<[u8; WRAPPED_DEK_LEN]> {
    let mut out = [0u8; WRAPPED_DEK_LEN];
    out[..32].copy_from_slice(dek.expose());
    let tag = seal_in_place(kek, nonce, context, &mut out[..32])?;
    out[32..].copy_from_slice(&tag);
    Ok(out)
}

/// Unwraps a DEK; `None` if the KEK, nonce or context is not the one it was wrapped with.
pub fn unwrap_dek(
    kek: &Key32,
    nonce: &[u8; 12],
    context: &[u8],
    wrapped: &[u8; WRAPPED_DEK_LEN],
) -> Option<Key32> {
    let plain = open(kek, nonce, context, wrapped)?;
    let mut k = [0u8; 32];
    k.copy_from_slice(&plain[..32]);
    let key = Key32(k);
    k.zeroize();
    Some(key)
}

/// Default Argon2id parameters for new stores: 64 MiB, 3 passes, 1 lane (OWASP's
/// second recommended set; about a quarter second here).
pub const ARGON2_M_COST_KIB: u32 = 64 * 1024;
/// See [`ARGON2_M_COST_KIB`].
pub const ARGON2_T_COST: u32 = 3;
/// See [`ARGON2_M_COST_KIB`].
pub const ARGON2_P_COST: u32 = 1;

/// Derives the keystore sealing key from a passphrase or key file.
pub fn derive_sealing_key(params: &KdfParams, secret: &[u8]) -> Result<Key32> {
    match params {
        KdfParams::Argon2id {
            m_cost_kib,
            t_cost,
            p_cost,
            salt,
        } => {
            let p = argon2::Params::new(*m_cost_kib, *t_cost, *p_cost, Some(32))
                .map_err(|e| Error::Corrupt(format!("keystore: bad Argon2id parameters: {e}")))?;
            let a = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, p);
            let mut out = [0u8; 32];
            a.hash_password_into(secret, salt, &mut out)
                .map_err(|e| Error::InvalidArgument(format!("Argon2id failed: {e}")))?;
            let k = Key32(out);
            out.zeroize();
            Ok(k)
        }
        KdfParams::RawKey => {
            let k: [u8; 32] = secret.try_into().map_err(|_| {
                Error::InvalidArgument(
                    "a key file must hold exactly 32 bytes (raw or base64)".into(),
                )
            })?;
            Ok(Key32(k))
        }
    }
}

/// Domain label of customer-key fingerprints.
pub const FINGERPRINT_LABEL: &[u8] = b"envelopefs.sse-c.fingerprint.v1";

/// The fingerprint recorded in headers for a customer-provided key.
pub fn customer_fingerprint(key: &Key32) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(FINGERPRINT_LABEL);
    h.update(key.expose());
    h.finalize().into()
}

/// A DEK ready to encrypt and decrypt chunks (the AES key schedule is computed once).
pub struct ChunkCipher {
    cipher: LessSafeKey,
}

impl ChunkCipher {
    /// Prepares the cipher for a DEK.
    pub fn new(dek: &Key32) -> Result<Self> {
        Ok(ChunkCipher {
            cipher: dek.cipher()?,
        })
    }

    /// Encrypts `buf` in place and returns its tag.
    pub fn encrypt(&self, nonce: &[u8], aad: &[u8], buf: &mut [u8]) -> Result<[u8; 16]> {
        seal_with(&self.cipher, nonce, aad, buf)
    }

    /// Decrypts `buf` in place; `false` if authentication failed (then `buf` is garbage).
    pub fn decrypt(&self, nonce: &[u8], aad: &[u8], buf: &mut [u8], tag: &[u8]) -> bool {
        open_with(&self.cipher, nonce, aad, buf, tag)
    }
}

/// Parses a key file: 32 raw bytes, or base64 text of 32 bytes (whitespace trimmed).
pub fn parse_key_file(bytes: &[u8]) -> Result<Key32> {
    use base64::Engine;
    if bytes.len() == 32 {
        let mut k = [0u8; 32];
        k.copy_from_slice(bytes);
        let key = Key32(k);
        k.zeroize();
        return Ok(key);
    }
    let text = std::str::from_utf8(bytes).map_err(|_| {
        Error::InvalidArgument("key file is neither 32 raw bytes nor base64".into())
    })?;
    let decoded = Zeroizing::new(
        base64::engine::general_purpose::STANDARD
            .decode(text.trim())
            .map_err(|_| {
                Error::InvalidArgument("key file is neither 32 raw bytes nor base64".into())
            })?,
    );
    let k: [u8; 32] = decoded.as_slice().try_into().map_err(|_| {
        Error::InvalidArgument(format!(
            "key file decodes to {} bytes; an AES-256 key is 32",
            decoded.len()
        ))
    })?;
    Ok(Key32(k))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nonces_from_the_pool_never_repeat_across_refills() {
        let mut seen = std::collections::HashSet::new();
        // 12-byte nonces, one at a time and in batches, well past several 4 KiB refills.
        for i in 0..3000 {
            let mut n = vec![0u8; if i % 7 == 0 { 12 * 9 } else { 12 }];
            fill_nonces(&mut n).expect("nonces");
            for c in n.chunks(12) {
                assert!(seen.insert(c.to_vec()), "nonce repeated at draw {i}");
            }
        }
        // A request larger than a quarter of the pool goes to the OS directly.
        let mut big = vec![0u8; NONCE_POOL];
        fill_nonces(&mut big).expect("big");
        assert!(big.iter().any(|&b| b != 0));
    }
}
