//! A bucket's name key (store format version 2): 32 random bytes, stored only wrapped under a
//! master key version of the keystore, bound to the store and the bucket ids, exactly like a
//! DEK but with its own context ([`name_key_context`]), so a wrapped name key never unwraps as
//! a DEK nor a wrapped DEK as a name key. A key rotation followed by a bucket re-encrypt, and
//! a change of the bucket's key, rewrap it ([`rewrap`]): one small record per bucket, O(1).
//!
//! Authorized like a DEK: creating one needs encrypt on the wrapping key, opening one
//! decrypt, a rewrap re-encrypt-from on the source and re-encrypt-to on the destination.

use super::crypto::{self, Key32};
use super::keystore::{key_id_text, ops, KeyStore};
use crate::error::{Error, Result};
use crate::format::context::name_key_context;
use crate::format::names::NameCipher;
use crate::format::records::WrappedNameKey;
use crate::format::Id16;

/// Wraps `name_key` under `kek` (version `version` of master key `key_id`) with a fixed
/// `nonce` (tests fix it; [`create`] and [`rewrap`] draw a fresh one).
pub fn wrap(
    kek: &Key32,
    nonce: [u8; 12],
    store: &Id16,
    bucket: &Id16,
    key_id: Id16,
    version: u32,
    name_key: &Key32,
) -> Result<WrappedNameKey> {
    let ctx = name_key_context(store, bucket, &key_id, version);
    Ok(WrappedNameKey {
        key_id,
        version,
        nonce,
        wrapped: crypto::wrap_dek(kek, &nonce, &ctx, name_key)?,
    })
}

/// Unwraps a name key; `None` if the KEK is not the one it was wrapped with, or the record
/// was moved to another bucket or store or edited.
pub fn unwrap(kek: &Key32, store: &Id16, bucket: &Id16, w: &WrappedNameKey) -> Option<Key32> {
    let ctx = name_key_context(store, bucket, &w.key_id, w.version);
    crypto::unwrap_dek(kek, &w.nonce, &ctx, &w.wrapped)
}

/// A fresh random name key for a new bucket, wrapped under the current version of `key_id`
/// (the bucket's master key). Returns the key (to use at once) and its wrap (to store).
pub fn create(
    ks: &KeyStore,
    store: &Id16,
    bucket: &Id16,
    key_id: &Id16,
) -> Result<(Key32, WrappedNameKey)> {
    ks.check_allowed(key_id, ops::ENCRYPT)?;
    let (version, kek) = ks.current(key_id)?;
    let key = Key32::random()?;
    let w = wrap(
        &kek,
        crypto::random_array()?,
        store,
        bucket,
        *key_id,
        version,
        &key,
    )?;
    Ok((key, w))
}

fn unwrap_as(
    ks: &KeyStore,
    store: &Id16,
    bucket: &Id16,
    w: &WrappedNameKey,
    op: u32,
) -> Result<Key32> {
    ks.check_allowed(&w.key_id, op)?;
    let kek = ks.version(&w.key_id, w.version)?;
    unwrap(&kek, store, bucket, w).ok_or_else(|| {
        Error::Corrupt(format!(
            "the name key of the bucket does not unwrap under key {} version {} (tampered, or moved from another bucket or store)",
            key_id_text(&w.key_id),
            w.version
        ))
    })
}

/// Opens a bucket's name key (decrypt on its master key): ENOKEY if the key version is
/// missing or not enabled, EPERM if the key's policy denies decrypt, *corrupt* if it does
/// not unwrap.
pub fn open(ks: &KeyStore, store: &Id16, bucket: &Id16, w: &WrappedNameKey) -> Result<Key32> {
    unwrap_as(ks, store, bucket, w, ops::DECRYPT)
}

/// Opens a bucket's name key and prepares its cipher.
pub fn open_cipher(
    ks: &KeyStore,
    store: &Id16,
    bucket: &Id16,
    w: &WrappedNameKey,
) -> Result<NameCipher> {
    NameCipher::new(open(ks, store, bucket, w)?.expose())
}

/// Rewraps a bucket's name key under master key `to` at `version` (its current version when
/// `None`): what a bucket re-encrypt after `key rotate` and a change of the bucket's key do.
/// `None` when it is already wrapped there (nothing to write). The name key itself, and so
/// every stored name, stays the same.
pub fn rewrap(
    ks: &KeyStore,
    store: &Id16,
    bucket: &Id16,
    w: &WrappedNameKey,
    to: &Id16,
    version: Option<u32>,
) -> Result<Option<WrappedNameKey>> {
    ks.check_allowed(to, ops::REENCRYPT_TO)?;
    let (version, kek) = match version {
        Some(v) => (v, ks.version(to, v)?),
        None => ks.current(to)?,
    };
    if w.key_id == *to && w.version == version {
        return Ok(None);
    }
    let key = unwrap_as(ks, store, bucket, w, ops::REENCRYPT_FROM)?;
    wrap(
        &kek,
        crypto::random_array()?,
        store,
        bucket,
        *to,
        version,
        &key,
    )
    .map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::context::dek_context;
    use crate::format::records::Wrapping;
    use crate::keys::keystore::Secret;

    const STORE: Id16 = [1; 16];
    const BUCKET: Id16 = [2; 16];

    fn keystore() -> (KeyStore, Id16) {
        let ks = KeyStore::create(STORE, 4096, &Secret::KeyFile(Key32::from_bytes([9; 32])))
            .expect("keystore");
        let id = ks.default_key();
        (ks, id)
    }

    #[test]
    fn create_open_and_the_ids_it_is_bound_to() {
        let (ks, id) = keystore();
        let (key, w) = create(&ks, &STORE, &BUCKET, &id).expect("create");
        assert_eq!((w.key_id, w.version), (id, 1));
        assert_eq!(
            open(&ks, &STORE, &BUCKET, &w).expect("open").expose(),
            key.expose()
        );
        for (store, bucket) in [([3; 16], BUCKET), (STORE, [3; 16])] {
            assert!(matches!(
                open(&ks, &store, &bucket, &w),
                Err(Error::Corrupt(_))
            ));
        }
        let mut edited = w;
        edited.wrapped[0] ^= 1;
        assert!(matches!(
            open(&ks, &STORE, &BUCKET, &edited),
            Err(Error::Corrupt(_))
        ));
        let mut nonce = w;
        nonce.nonce[0] ^= 1;
        assert!(open(&ks, &STORE, &BUCKET, &nonce).is_err());
        // Two buckets get two different keys.
        let (other, _) = create(&ks, &STORE, &BUCKET, &id).expect("create");
        assert_ne!(other.expose(), key.expose());
    }

    #[test]
    fn a_wrapped_name_key_is_no_dek_and_a_wrapped_dek_no_name_key() {
        let kek = Key32::from_bytes([4; 32]);
        let key = Key32::from_bytes([5; 32]);
        let nonce = [6; 12];
        let w = wrap(&kek, nonce, &STORE, &BUCKET, [7; 16], 3, &key).expect("wrap");
        // The DEK context of every object of the bucket under the same key version.
        let wrapping = Wrapping::Master {
            key_id: [7; 16],
            version: 3,
        };
        for object in [[0u8; 16], BUCKET, STORE] {
            let ctx = dek_context(&STORE, &BUCKET, &object, 0, &wrapping);
            assert!(crypto::unwrap_dek(&kek, &nonce, &ctx, &w.wrapped).is_none());
        }
        let ctx = dek_context(&STORE, &BUCKET, &[0; 16], 0, &wrapping);
        let dek = crypto::wrap_dek(&kek, &nonce, &ctx, &key).expect("dek");
        let as_name_key = WrappedNameKey { wrapped: dek, ..w };
        assert!(unwrap(&kek, &STORE, &BUCKET, &as_name_key).is_none());
        assert!(unwrap(&kek, &STORE, &BUCKET, &w).is_some());
    }

    #[test]
    fn rotation_then_rewrap_keeps_the_key_and_moves_the_wrap() {
        let (mut ks, id) = keystore();
        let (key, w) = create(&ks, &STORE, &BUCKET, &id).expect("create");
        assert_eq!(
            rewrap(&ks, &STORE, &BUCKET, &w, &id, None).expect("same"),
            None
        );
        assert_eq!(ks.rotate(&id).expect("rotate"), 2);
        let w2 = rewrap(&ks, &STORE, &BUCKET, &w, &id, None)
            .expect("rewrap")
            .expect("changed");
        assert_eq!((w2.key_id, w2.version), (id, 2));
        assert_ne!(w2.nonce, w.nonce);
        // The old version can go: the new wrap opens without it.
        ks.set_enabled(&id, Some(1), false).expect("disable");
        assert_eq!(
            open(&ks, &STORE, &BUCKET, &w2).expect("open").expose(),
            key.expose()
        );
        assert!(matches!(
            open(&ks, &STORE, &BUCKET, &w),
            Err(Error::NoKey(_))
        ));
        // And a rewrap from the disabled version is ENOKEY, not a new key.
        let other = ks.create_key(None).expect("key");
        assert!(matches!(
            rewrap(&ks, &STORE, &BUCKET, &w, &other, None),
            Err(Error::NoKey(_))
        ));
    }

    #[test]
    fn a_bucket_key_change_rewraps_under_the_new_key() {
        let (mut ks, id) = keystore();
        let (key, w) = create(&ks, &STORE, &BUCKET, &id).expect("create");
        let other = ks.create_key(Some("photos".into())).expect("key");
        let w2 = rewrap(&ks, &STORE, &BUCKET, &w, &other, Some(1))
            .expect("rewrap")
            .expect("changed");
        assert_eq!((w2.key_id, w2.version), (other, 1));
        assert_eq!(
            open(&ks, &STORE, &BUCKET, &w2).expect("open").expose(),
            key.expose()
        );
    }

    #[test]
    fn the_key_policy_is_checked_for_each_operation() {
        let (mut ks, id) = keystore();
        let (_, w) = create(&ks, &STORE, &BUCKET, &id).expect("create");
        let other = ks.create_key(None).expect("key");
        ks.set_allowed_ops(&id, ops::ALL & !ops::DECRYPT)
            .expect("ops");
        assert!(matches!(
            open(&ks, &STORE, &BUCKET, &w),
            Err(Error::PermissionDenied(_))
        ));
        ks.set_allowed_ops(&id, ops::ALL & !ops::REENCRYPT_FROM)
            .expect("ops");
        assert!(matches!(
            rewrap(&ks, &STORE, &BUCKET, &w, &other, None),
            Err(Error::PermissionDenied(_))
        ));
        ks.set_allowed_ops(&id, ops::ALL & !ops::ENCRYPT)
            .expect("ops");
        assert!(matches!(
            create(&ks, &STORE, &BUCKET, &id),
            Err(Error::PermissionDenied(_))
        ));
        ks.set_allowed_ops(&other, ops::ALL & !ops::REENCRYPT_TO)
            .expect("ops");
        ks.set_allowed_ops(&id, ops::ALL).expect("ops");
        assert!(matches!(
            rewrap(&ks, &STORE, &BUCKET, &w, &other, None),
            Err(Error::PermissionDenied(_))
        ));
    }

    #[test]
    fn the_opened_key_encrypts_names() {
        let (ks, id) = keystore();
        let (_, w) = create(&ks, &STORE, &BUCKET, &id).expect("create");
        let c = open_cipher(&ks, &STORE, &BUCKET, &w).expect("cipher");
        let s = c.encrypt_name(&BUCKET, b"a.txt").expect("enc");
        let again = open_cipher(&ks, &STORE, &BUCKET, &w).expect("cipher");
        assert_eq!(
            again
                .decrypt_short_name(&BUCKET, s.entry().as_bytes())
                .expect("dec"),
            b"a.txt"
        );
    }
}
