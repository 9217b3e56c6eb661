//! Master keys and their versions, sealed on disk under a passphrase or key file.
//!
//! The in-memory [`KeyStore`] holds the unsealed body and the sealing key, so a mount can
//! persist new keys and versions without asking for the passphrase again. Persisting is the
//! store's job (atomic replace); this module only seals and unseals bytes.

use crate::error::{Error, Result};
use crate::format::records::{
    KdfParams, KeyVersionRecord, KeystoreBody, KeystoreFile, KeystorePrefix, MasterKeyRecord,
    VersionState, KEYSTORE_MAGIC,
};
use crate::format::{hex, unhex, Id16, FORMAT_VERSION};
use crate::keys::crypto::{self, Key32};
use zeroize::{Zeroize, Zeroizing};

/// Prefix of key ids as users see them.
pub const KEY_ID_PREFIX: &str = "key-";

/// Allowed-operation bits of a master key.
pub mod ops {
    /// Wrap new DEKs.
    pub const ENCRYPT: u32 = 1;
    /// Unwrap DEKs to read objects.
    pub const DECRYPT: u32 = 2;
    /// Be the source of a re-encrypt.
    pub const REENCRYPT_FROM: u32 = 4;
    /// Be the destination of a re-encrypt.
    pub const REENCRYPT_TO: u32 = 8;
    /// Everything (the default).
    pub const ALL: u32 = 15;
    /// Names for JSON and the CLI.
    pub const NAMES: [(&str, u32); 4] = [
        ("encrypt", ENCRYPT),
        ("decrypt", DECRYPT),
        ("re-encrypt-from", REENCRYPT_FROM),
        ("re-encrypt-to", REENCRYPT_TO),
    ];
}

/// The passphrase or key file that opens a keystore.
pub enum Secret {
    /// A passphrase (Argon2id).
    Passphrase(Zeroizing<Vec<u8>>),
    /// A raw 32-byte key.
    KeyFile(Key32),
}

/// Formats a key id for users.
pub fn key_id_text(id: &Id16) -> String {
    format!("{KEY_ID_PREFIX}{}", hex(id))
}

/// Parses `key-<32 hex>` (or bare hex).
pub fn parse_key_id(s: &str) -> Option<Id16> {
    unhex::<16>(s.strip_prefix(KEY_ID_PREFIX).unwrap_or(s))
}

/// Seconds since the Unix epoch.
pub fn now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Fewest days a scheduled deletion of a key version waits (AWS KMS's window).
pub const MIN_DELETION_DAYS: u32 = 7;
/// Most days a scheduled deletion of a key version waits.
pub const MAX_DELETION_DAYS: u32 = 30;
/// Days a deletion waits when `--days` is not given.
pub const DEFAULT_DELETION_DAYS: u32 = 30;
/// Name of the test-only fault (see [`crate::fault`]) that runs the deletion clock
/// [`DELETION_CLOCK_AHEAD_S`] ahead, so tests can reach a deletion date without waiting days.
pub const DELETION_CLOCK_FAULT: &str = "deletion-clock-ahead";
/// How far ahead the deletion clock runs under [`DELETION_CLOCK_FAULT`]: past the longest
/// deletion window, so every scheduled deletion is due at once.
pub const DELETION_CLOCK_AHEAD_S: u64 = 366 * 86_400;

/// The clock that decides whether a scheduled deletion is due: the system clock, or under
/// the test-only fault [`DELETION_CLOCK_FAULT`] the system clock plus a year.
pub fn deletion_clock_now() -> u64 {
    let ahead = if crate::fault::enabled(DELETION_CLOCK_FAULT) {
        DELETION_CLOCK_AHEAD_S
    } else {
        0
    };
    now_s().saturating_add(ahead)
}

/// Parses `--allowed-operations`: comma-separated names of [`ops::NAMES`], or `all`, or
/// `none`.
pub fn parse_ops(list: &str) -> Result<u32> {
    let list = list.trim();
    match list {
        "all" => return Ok(ops::ALL),
        "none" => return Ok(0),
        _ => {}
    }
    let mut bits = 0;
    for word in list.split(',').map(str::trim) {
        let bit = ops::NAMES
            .iter()
            .find(|(n, _)| *n == word)
            .map(|(_, b)| *b)
            .ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "unknown operation {word:?}: use a comma-separated list of encrypt, decrypt, re-encrypt-from, re-encrypt-to, or all, or none"
                ))
            })?;
        bits |= bit;
    }
    Ok(bits)
}

/// The name of one operation bit (for messages).
pub fn op_name(op: u32) -> &'static str {
    ops::NAMES
        .iter()
        .find(|(_, bit)| *bit == op)
        .map(|(n, _)| *n)
        .unwrap_or("operation")
}

/// An opened keystore.
pub struct KeyStore {
    body: KeystoreBody,
    store_id: Id16,
    kdf: KdfParams,
    sealing: Key32,
}

impl KeyStore {
    /// A new keystore with one default key (version 1).
    pub fn create(store_id: Id16, chunk_size: u32, secret: &Secret) -> Result<Self> {
        let (kdf, sealing) = match secret {
            Secret::Passphrase(p) => {
                let kdf = KdfParams::Argon2id {
                    m_cost_kib: crypto::ARGON2_M_COST_KIB,
                    t_cost: crypto::ARGON2_T_COST,
                    p_cost: crypto::ARGON2_P_COST,
                    salt: crypto::random_array()?,
                };
                let k = crypto::derive_sealing_key(&kdf, p)?;
                (kdf, k)
            }
            Secret::KeyFile(k) => (KdfParams::RawKey, k.clone()),
        };
        let mut ks = KeyStore {
            body: KeystoreBody {
                chunk_size,
                default_key: [0; 16],
                keys: Vec::new(),
            },
            store_id,
            kdf,
            sealing,
        };
        let id = ks.create_key(Some("default".into()))?;
        ks.body.default_key = id;
        Ok(ks)
    }

    /// Opens keystore bytes with a secret. A wrong secret is [`Error::WrongSecret`].
    pub fn unseal(bytes: &[u8], store_id: &Id16, secret: &Secret) -> Result<Self> {
        let file = KeystoreFile::decode(bytes)?;
        if &file.prefix.store_id != store_id {
            return Err(Error::Corrupt(
                "keystore belongs to another store (store id differs from config)".into(),
            ));
        }
        let sealing = match (secret, &file.prefix.kdf) {
            (Secret::Passphrase(p), kdf @ KdfParams::Argon2id { .. }) => {
                check_kdf_bounds(kdf)?;
                crypto::derive_sealing_key(kdf, p)?
            }
            (Secret::KeyFile(k), KdfParams::RawKey) => k.clone(),
            (Secret::Passphrase(_), KdfParams::RawKey) => {
                return Err(Error::InvalidArgument(
                    "this store is sealed with a key file: pass --key-file".into(),
                ))
            }
            (Secret::KeyFile(_), KdfParams::Argon2id { .. }) => {
                return Err(Error::InvalidArgument(
                    "this store is sealed with a passphrase: pass --password-file or type it"
                        .into(),
                ))
            }
        };
        let aad = KeystoreFile::prefix_bytes(&file.prefix);
        let plain = crypto::open(&sealing, &file.prefix.nonce, &aad, &file.sealed)
            .ok_or(Error::WrongSecret)?;
        let body = KeystoreBody::decode(&plain)?;
        Ok(KeyStore {
            body,
            store_id: *store_id,
            kdf: file.prefix.kdf,
            sealing,
        })
    }

    /// Re-opens bytes sealed by this keystore's sealing key (rolls back a failed persist).
    pub(crate) fn reopen(&self, bytes: &[u8]) -> Result<KeyStore> {
        let file = KeystoreFile::decode(bytes)?;
        let aad = KeystoreFile::prefix_bytes(&file.prefix);
        let plain = crypto::open(&self.sealing, &file.prefix.nonce, &aad, &file.sealed)
            .ok_or(Error::WrongSecret)?;
        Ok(KeyStore {
            body: KeystoreBody::decode(&plain)?,
            store_id: self.store_id,
            kdf: file.prefix.kdf,
            sealing: self.sealing.clone(),
        })
    }

    /// Seals the keystore into file bytes (fresh nonce).
    pub fn seal(&self) -> Result<Vec<u8>> {
        let prefix = KeystorePrefix {
            magic: KEYSTORE_MAGIC,
            version: FORMAT_VERSION,
            store_id: self.store_id,
            kdf: self.kdf.clone(),
            nonce: crypto::random_array()?,
        };
        let aad = KeystoreFile::prefix_bytes(&prefix);
        let plain = Zeroizing::new(self.body.encode()?);
        let sealed = crypto::seal(&self.sealing, &prefix.nonce, &aad, &plain)?;
        Ok(KeystoreFile { prefix, sealed }.encode())
    }

    /// The chunk size recorded (authenticated) in the keystore.
    pub fn chunk_size(&self) -> u32 {
        self.body.chunk_size
    }

    /// The default key's id.
    pub fn default_key(&self) -> Id16 {
        self.body.default_key
    }

    /// All keys.
    pub fn keys(&self) -> &[MasterKeyRecord] {
        &self.body.keys
    }

    /// Finds a key by `key-<hex>`, hex, alias, or `default`.
    pub fn resolve(&self, key_ref: &str) -> Result<&MasterKeyRecord> {
        let found = if key_ref == "default" {
            self.find(&self.body.default_key)
        } else if let Some(id) = parse_key_id(key_ref) {
            self.find(&id)
        } else {
            self.body
                .keys
                .iter()
                .find(|k| k.alias.as_deref() == Some(key_ref))
        };
        found.ok_or_else(|| Error::NoKey(format!("no master key {key_ref:?} in this store")))
    }

    /// Finds a key by id.
    pub fn find(&self, id: &Id16) -> Option<&MasterKeyRecord> {
        self.body.keys.iter().find(|k| &k.id == id)
    }

    fn find_mut(&mut self, id: &Id16) -> Result<&mut MasterKeyRecord> {
        self.body
            .keys
            .iter_mut()
            .find(|k| &k.id == id)
            .ok_or_else(|| Error::NoKey(format!("no master key {}", key_id_text(id))))
    }

    /// Creates a key with version 1; returns its id.
    pub fn create_key(&mut self, alias: Option<String>) -> Result<Id16> {
        if let Some(a) = &alias {
            validate_alias(a)?;
            if self.body.keys.iter().any(|k| k.alias.as_deref() == Some(a)) {
                return Err(Error::AlreadyExists(format!(
                    "a key with alias {a:?} exists"
                )));
            }
        }
        let id: Id16 = crypto::random_array()?;
        let now = now_s();
        self.body.keys.push(MasterKeyRecord {
            id,
            alias,
            created_s: now,
            allowed_ops: ops::ALL,
            versions: vec![new_version(1, now)?],
        });
        Ok(id)
    }

    /// Adds a version that becomes current; returns its number.
    pub fn rotate(&mut self, id: &Id16) -> Result<u32> {
        let k = self.find_mut(id)?;
        let next = k.versions.last().map(|v| v.version + 1).unwrap_or(1);
        k.versions.push(new_version(next, now_s())?);
        Ok(next)
    }

    /// Enables or disables one version (default: the current one).
    pub fn set_enabled(&mut self, id: &Id16, version: Option<u32>, enabled: bool) -> Result<u32> {
        let k = self.find_mut(id)?;
        let n = match version {
            Some(n) => n,
            None => k.versions.last().map(|v| v.version).unwrap_or(1),
        };
        let v = k
            .versions
            .iter_mut()
            .find(|v| v.version == n)
            .ok_or_else(|| {
                Error::NotFound(format!("key {} has no version {n}", key_id_text(id)))
            })?;
        match v.state {
            VersionState::Destroyed => {
                return Err(Error::NoKey(format!(
                    "version {n} of key {} is destroyed",
                    key_id_text(id)
                )))
            }
            VersionState::PendingDeletion => {
                return Err(Error::InvalidArgument(format!(
                    "version {n} of key {} is pending deletion: cancel the deletion first (key cancel-deletion)",
                    key_id_text(id)
                )))
            }
            _ => {}
        }
        v.state = if enabled {
            VersionState::Enabled
        } else {
            VersionState::Disabled
        };
        Ok(n)
    }

    /// The current (newest) version of a key and its material, for wrapping new DEKs.
    /// Fails with ENOKEY if that version is not enabled.
    pub fn current(&self, id: &Id16) -> Result<(u32, Key32)> {
        let k = self
            .find(id)
            .ok_or_else(|| Error::NoKey(format!("no master key {}", key_id_text(id))))?;
        let v = k
            .versions
            .last()
            .ok_or_else(|| Error::NoKey(format!("key {} has no versions", key_id_text(id))))?;
        if v.state != VersionState::Enabled {
            return Err(Error::NoKey(format!(
                "the current version {} of key {} is {}",
                v.version,
                key_id_text(id),
                state_word(v.state)
            )));
        }
        Ok((v.version, Key32::from_bytes(v.material)))
    }

    /// The material of one version, for unwrapping. ENOKEY if missing or not enabled.
    pub fn version(&self, id: &Id16, version: u32) -> Result<Key32> {
        let k = self
            .find(id)
            .ok_or_else(|| Error::NoKey(format!("no master key {}", key_id_text(id))))?;
        let v = k
            .versions
            .iter()
            .find(|v| v.version == version)
            .ok_or_else(|| {
                Error::NoKey(format!("key {} has no version {version}", key_id_text(id)))
            })?;
        if v.state != VersionState::Enabled {
            return Err(Error::NoKey(format!(
                "version {version} of key {} is {}",
                key_id_text(id),
                state_word(v.state)
            )));
        }
        Ok(Key32::from_bytes(v.material))
    }

    /// Whether a key allows an operation (see [`ops`]); EPERM naming it if not.
    pub fn check_allowed(&self, id: &Id16, op: u32) -> Result<()> {
        let k = self
            .find(id)
            .ok_or_else(|| Error::NoKey(format!("no master key {}", key_id_text(id))))?;
        if k.allowed_ops & op == op {
            return Ok(());
        }
        Err(Error::PermissionDenied(format!(
            "key {} does not allow {} (its allowed operations are changed with `key update`)",
            key_id_text(id),
            op_name(op)
        )))
    }

    /// Replaces a key's allowed operations (a bit set of [`ops`]).
    pub fn set_allowed_ops(&mut self, id: &Id16, bits: u32) -> Result<()> {
        if bits & !ops::ALL != 0 {
            return Err(Error::InvalidArgument(format!(
                "unknown operation bits {bits:#x}"
            )));
        }
        self.find_mut(id)?.allowed_ops = bits;
        Ok(())
    }

    /// The state of one version (NotFound if the key has no such version).
    pub fn version_state(&self, id: &Id16, version: u32) -> Result<VersionState> {
        let k = self
            .find(id)
            .ok_or_else(|| Error::NoKey(format!("no master key {}", key_id_text(id))))?;
        k.versions
            .iter()
            .find(|v| v.version == version)
            .map(|v| v.state)
            .ok_or_else(|| {
                Error::NotFound(format!("key {} has no version {version}", key_id_text(id)))
            })
    }

    /// Schedules the deletion of one version `days` days after `now`; returns the deletion
    /// time. The current (newest) version wraps new DEKs and cannot be scheduled: rotate
    /// first (EBUSY). The version stops working at once (like a disabled one).
    pub fn schedule_deletion(
        &mut self,
        id: &Id16,
        version: u32,
        days: u32,
        now: u64,
    ) -> Result<u64> {
        self.check_schedulable(id, version, days)?;
        let v = self.version_mut(id, version)?;
        let at = now.saturating_add(u64::from(days) * 86_400);
        v.state = VersionState::PendingDeletion;
        v.deletion_s = Some(at);
        Ok(at)
    }

    /// One version of a key, to change it.
    fn version_mut(&mut self, id: &Id16, version: u32) -> Result<&mut KeyVersionRecord> {
        let key = key_id_text(id);
        self.find_mut(id)?
            .versions
            .iter_mut()
            .find(|v| v.version == version)
            .ok_or_else(|| Error::NotFound(format!("key {key} has no version {version}")))
    }

    /// Whether [`KeyStore::schedule_deletion`] would accept these arguments (days in range,
    /// the version exists, is enabled or disabled, and is not the current one).
    pub fn check_schedulable(&self, id: &Id16, version: u32, days: u32) -> Result<()> {
        if !(MIN_DELETION_DAYS..=MAX_DELETION_DAYS).contains(&days) {
            return Err(Error::InvalidArgument(format!(
                "--days {days}: a deletion waits {MIN_DELETION_DAYS} to {MAX_DELETION_DAYS} days"
            )));
        }
        let key = key_id_text(id);
        let k = self
            .find(id)
            .ok_or_else(|| Error::NoKey(format!("no master key {key}")))?;
        let current = k.versions.last().map(|v| v.version);
        let v = k
            .versions
            .iter()
            .find(|v| v.version == version)
            .ok_or_else(|| Error::NotFound(format!("key {key} has no version {version}")))?;
        match v.state {
            VersionState::Destroyed => {
                return Err(Error::NoKey(format!(
                    "version {version} of key {key} is already destroyed"
                )))
            }
            VersionState::PendingDeletion => {
                return Err(Error::InvalidArgument(format!(
                    "version {version} of key {key} is already pending deletion (at {})",
                    v.deletion_s.unwrap_or(0)
                )))
            }
            VersionState::Enabled | VersionState::Disabled => {}
        }
        if current == Some(version) {
            return Err(Error::Busy(format!(
                "version {version} is the current version of key {key} and wraps new data keys: rotate the key first (key rotate)"
            )));
        }
        Ok(())
    }

    /// Cancels a pending deletion; the version becomes DISABLED (enable it to use it again).
    pub fn cancel_deletion(&mut self, id: &Id16, version: u32) -> Result<()> {
        let key = key_id_text(id);
        let v = self.version_mut(id, version)?;
        match v.state {
            VersionState::PendingDeletion => {
                v.state = VersionState::Disabled;
                v.deletion_s = None;
                Ok(())
            }
            VersionState::Destroyed => Err(Error::NoKey(format!(
                "version {version} of key {key} is destroyed: its deletion cannot be cancelled"
            ))),
            VersionState::Enabled | VersionState::Disabled => Err(Error::InvalidArgument(format!(
                "version {version} of key {key} is not pending deletion"
            ))),
        }
    }

    /// Whether some version is pending deletion with its date at or before `now`.
    pub fn has_due(&self, now: u64) -> bool {
        self.body.keys.iter().any(|k| {
            k.versions
                .iter()
                .any(|v| is_due(v.state, v.deletion_s, now))
        })
    }

    /// Destroys every version whose deletion date is at or before `now`: its material is
    /// overwritten with zeros and its state becomes DESTROYED. Returns what was destroyed.
    pub fn destroy_due(&mut self, now: u64) -> Vec<(Id16, u32)> {
        let mut out = Vec::new();
        for k in &mut self.body.keys {
            for v in &mut k.versions {
                if is_due(v.state, v.deletion_s, now) {
                    v.material.zeroize();
                    v.state = VersionState::Destroyed;
                    out.push((k.id, v.version));
                }
            }
        }
        out
    }

    /// Key metadata (never material): the reply of the `key` commands.
    pub fn describe(&self, k: &MasterKeyRecord) -> KeyInfo {
        KeyInfo {
            alias: k.alias.clone(),
            allowed_operations: ops::NAMES
                .iter()
                .filter(|(_, bit)| k.allowed_ops & bit == *bit)
                .map(|(n, _)| *n)
                .collect(),
            created: k.created_s,
            current_version: k.versions.last().map(|v| v.version),
            id: key_id_text(&k.id),
            is_default: k.id == self.body.default_key,
            versions: k
                .versions
                .iter()
                .map(|v| KeyVersionInfo {
                    created: v.created_s,
                    deletion_time: v.deletion_s,
                    state: v.state,
                    version: v.version,
                })
                .collect(),
        }
    }
}

/// A master key's metadata as the `key` commands print it (never material).
#[derive(Debug, Clone, serde::Serialize)]
pub struct KeyInfo {
    /// Its alias, or null.
    pub alias: Option<String>,
    /// The operations its policy allows, by name.
    pub allowed_operations: Vec<&'static str>,
    /// Creation time (seconds since the epoch).
    pub created: u64,
    /// The newest version.
    pub current_version: Option<u32>,
    /// `key-HEX`.
    pub id: String,
    /// Whether it is the store's default key.
    pub is_default: bool,
    /// Every version, oldest first.
    pub versions: Vec<KeyVersionInfo>,
}

/// One version of a master key in [`KeyInfo`].
#[derive(Debug, Clone, serde::Serialize)]
pub struct KeyVersionInfo {
    /// Creation time (seconds since the epoch).
    pub created: u64,
    /// When it is (or was) to be destroyed, or null.
    pub deletion_time: Option<u64>,
    /// Its state.
    pub state: VersionState,
    /// The version number.
    pub version: u32,
}

/// Largest Argon2id parameters a keystore may ask for: 1 GiB of memory, 64 passes, 64 lanes.
/// The parameters are read before the keystore is authenticated (they make the key that
/// authenticates it), so a damaged or hostile prefix must not make us allocate terabytes.
pub const MAX_ARGON2_M_COST_KIB: u32 = 1 << 20;
/// See [`MAX_ARGON2_M_COST_KIB`].
pub const MAX_ARGON2_T_COST: u32 = 64;
/// See [`MAX_ARGON2_M_COST_KIB`].
pub const MAX_ARGON2_P_COST: u32 = 64;

fn check_kdf_bounds(kdf: &KdfParams) -> Result<()> {
    if let KdfParams::Argon2id {
        m_cost_kib,
        t_cost,
        p_cost,
        ..
    } = kdf
    {
        if *m_cost_kib > MAX_ARGON2_M_COST_KIB
            || *t_cost > MAX_ARGON2_T_COST
            || *p_cost > MAX_ARGON2_P_COST
        {
            return Err(Error::Corrupt(format!(
                "keystore: Argon2id parameters out of range (memory {m_cost_kib} KiB, {t_cost} passes, {p_cost} lanes): the keystore is damaged"
            )));
        }
    }
    Ok(())
}

fn new_version(version: u32, now: u64) -> Result<KeyVersionRecord> {
    Ok(KeyVersionRecord {
        version,
        created_s: now,
        state: VersionState::Enabled,
        deletion_s: None,
        material: *Key32::random()?.expose(),
    })
}

fn is_due(state: VersionState, deletion_s: Option<u64>, now: u64) -> bool {
    state == VersionState::PendingDeletion && deletion_s.is_some_and(|t| t <= now)
}

fn state_word(s: VersionState) -> &'static str {
    match s {
        VersionState::Enabled => "enabled",
        VersionState::Disabled => "disabled",
        VersionState::PendingDeletion => "pending deletion",
        VersionState::Destroyed => "destroyed",
    }
}

/// Aliases: 1 to 64 of `A-Za-z0-9._-`, not a key id, not a word the commands take where
/// they take a key (`latest`, `none`: `command::KeyWord`).
pub fn validate_alias(a: &str) -> Result<()> {
    let ok = !a.is_empty()
        && a.len() <= 64
        && a.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
        && !a.starts_with(KEY_ID_PREFIX)
        && a != "latest"
        && a != "none"
        && parse_key_id(a).is_none();
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidArgument(format!(
            "invalid key alias {a:?}: use 1-64 of A-Z a-z 0-9 . _ -, not starting with \"key-\", not \"latest\" or \"none\""
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keyfile() -> Secret {
        Secret::KeyFile(Key32::from_bytes([9u8; 32]))
    }

    #[test]
    fn seal_unseal_round_trip_and_wrong_secret() {
        let sid = [1u8; 16];
        let mut ks = KeyStore::create(sid, 16384, &keyfile()).unwrap();
        let id = ks.create_key(Some("photos".into())).unwrap();
        assert_eq!(ks.rotate(&id).unwrap(), 2);
        let bytes = ks.seal().unwrap();
        let back = KeyStore::unseal(&bytes, &sid, &keyfile()).unwrap();
        assert_eq!(back.resolve("photos").unwrap().versions.len(), 2);
        assert_eq!(back.chunk_size(), 16384);
        let wrong = Secret::KeyFile(Key32::from_bytes([8u8; 32]));
        assert!(matches!(
            KeyStore::unseal(&bytes, &sid, &wrong),
            Err(Error::WrongSecret)
        ));
        assert!(matches!(
            KeyStore::unseal(&bytes, &[2u8; 16], &keyfile()),
            Err(Error::Corrupt(_))
        ));
    }

    #[test]
    fn disabled_version_is_enokey() {
        let mut ks = KeyStore::create([1u8; 16], 4096, &keyfile()).unwrap();
        let id = ks.default_key();
        ks.rotate(&id).unwrap();
        ks.set_enabled(&id, Some(1), false).unwrap();
        assert_eq!(
            ks.version(&id, 1).err().map(|e| e.errno()),
            Some(libc::ENOKEY)
        );
        assert!(ks.version(&id, 2).is_ok());
        ks.set_enabled(&id, None, false).unwrap();
        assert_eq!(ks.current(&id).err().map(|e| e.errno()), Some(libc::ENOKEY));
    }

    #[test]
    fn deletion_lifecycle_zeroes_material_when_due() {
        let mut ks = KeyStore::create([1u8; 16], 4096, &keyfile()).unwrap();
        let id = ks.default_key();
        // The current version cannot be scheduled; days are bounded.
        assert_eq!(
            ks.schedule_deletion(&id, 1, 7, 100).unwrap_err().errno(),
            libc::EBUSY
        );
        ks.rotate(&id).unwrap();
        assert_eq!(
            ks.schedule_deletion(&id, 1, 6, 100).unwrap_err().errno(),
            libc::EINVAL
        );
        let at = ks.schedule_deletion(&id, 1, 7, 100).unwrap();
        assert_eq!(at, 100 + 7 * 86_400);
        assert_eq!(
            ks.version(&id, 1).err().map(|e| e.errno()),
            Some(libc::ENOKEY)
        );
        assert!(
            ks.set_enabled(&id, Some(1), false).is_err(),
            "disable must not cancel"
        );
        assert!(!ks.has_due(at - 1));
        assert!(ks.destroy_due(at - 1).is_empty());
        ks.cancel_deletion(&id, 1).unwrap();
        assert_eq!(ks.version_state(&id, 1).unwrap(), VersionState::Disabled);
        assert!(ks.cancel_deletion(&id, 1).is_err());
        let at = ks.schedule_deletion(&id, 1, 30, 200).unwrap();
        assert!(ks.has_due(at));
        assert_eq!(ks.destroy_due(at), vec![(id, 1)]);
        let v1 = &ks.find(&id).unwrap().versions[0];
        assert_eq!(v1.state, VersionState::Destroyed);
        assert_eq!(v1.material, [0u8; 32]);
        assert_ne!(ks.find(&id).unwrap().versions[1].material, [0u8; 32]);
        assert!(!ks.has_due(u64::MAX));
        assert_eq!(
            ks.cancel_deletion(&id, 1).unwrap_err().errno(),
            libc::ENOKEY
        );
        assert_eq!(
            ks.set_enabled(&id, Some(1), true).unwrap_err().errno(),
            libc::ENOKEY
        );
    }

    #[test]
    fn policy_names_parse() {
        assert_eq!(parse_ops("all").unwrap(), ops::ALL);
        assert_eq!(parse_ops("none").unwrap(), 0);
        assert_eq!(
            parse_ops("decrypt, re-encrypt-from").unwrap(),
            ops::DECRYPT | ops::REENCRYPT_FROM
        );
        assert!(parse_ops("decrypt,").is_err());
        assert!(parse_ops("read").is_err());
        let mut ks = KeyStore::create([1u8; 16], 4096, &keyfile()).unwrap();
        let id = ks.default_key();
        ks.set_allowed_ops(&id, ops::DECRYPT).unwrap();
        let e = ks.check_allowed(&id, ops::REENCRYPT_TO).unwrap_err();
        assert_eq!(e.errno(), libc::EPERM);
        assert!(e.to_string().contains("re-encrypt-to"));
        assert!(ks.check_allowed(&id, ops::DECRYPT).is_ok());
    }

    #[test]
    fn aliases_are_validated() {
        let mut ks = KeyStore::create([1u8; 16], 4096, &keyfile()).unwrap();
        assert!(ks.create_key(Some("latest".into())).is_err());
        assert!(ks.create_key(Some("none".into())).is_err());
        assert!(ks.create_key(Some("a/b".into())).is_err());
        assert!(ks.create_key(Some("default".into())).is_err());
        assert!(ks.create_key(Some("ok-1".into())).is_ok());
    }
}
