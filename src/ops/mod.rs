//! Operations over a store, the same for every storage backend: rewrapping and rekeying
//! objects ([`rewrap`], [`rekey`]), persisted bucket jobs ([`workreq`]), the key lifecycle and
//! envelope blobs ([`kms`]), checking ([`fsck`]), header backups ([`headers`]), one look at a
//! store ([`status`]) and copying a whole store as it is stored ([`copy`]). They reach the
//! bytes only through [`crate::store`].

/// An enum of unit variants, each persisted and printed as one fixed string: serde
/// (de)serializes a variant as its string (and refuses any other string), `as_str` and
/// `Display` give it, `ALL` lists every variant (a new one cannot be left out of it), and
/// variants order as their strings do (so maps keyed by them keep the order that string
/// keys had).
macro_rules! string_enum {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident {
            $($(#[$vmeta:meta])* $variant:ident = $text:literal,)+
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
        $vis enum $name {
            $($(#[$vmeta])* #[serde(rename = $text)] $variant,)+
        }

        impl $name {
            /// Every variant, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The string it is persisted and printed as.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl PartialOrd for $name {
            fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
                Some(self.cmp(other))
            }
        }

        impl Ord for $name {
            fn cmp(&self, other: &Self) -> std::cmp::Ordering {
                self.as_str().cmp(other.as_str())
            }
        }
    };
}

pub mod copy;
pub mod fsck;
pub mod headers;
pub mod kms;
pub mod rekey;
pub mod rewrap;
pub mod status;
pub mod workreq;

/// What the unit tests of the operations share.
#[cfg(test)]
pub(crate) mod test_support {
    use crate::keys::crypto::Key32;
    use crate::keys::keystore::Secret;
    use crate::store::{Store, StoreLock};
    use std::path::PathBuf;

    /// A new store in a temporary directory (kept while the first value lives), opened with a
    /// key file of `seed` bytes: (the directory, the store's root, the store).
    pub fn temp_store(seed: u8) -> (tempfile::TempDir, PathBuf, Store) {
        let dir = tempfile::tempdir().expect("temp dir");
        let root = dir.path().join("s");
        let secret = Secret::KeyFile(Key32::from_bytes([seed; 32]));
        Store::init(&root, 4096, &secret).expect("init");
        let lock = StoreLock::acquire(&root).expect("lock");
        let store = Store::open(&root, lock, &secret).expect("open");
        (dir, root, store)
    }

    /// A string enum (see `string_enum!`) is persisted and printed as it always was: `today`
    /// lists every variant once, in declaration order, with its string.
    pub fn assert_strings_as_today<T>(today: &[(T, &str)], all: &[T])
    where
        T: Copy + PartialEq + std::fmt::Debug + std::fmt::Display,
        T: serde::Serialize + serde::de::DeserializeOwned,
    {
        let variants: Vec<T> = today.iter().map(|(v, _)| *v).collect();
        assert_eq!(variants, all, "every variant, once");
        for (v, text) in today {
            assert_eq!(
                serde_json::to_value(v).expect("to JSON"),
                serde_json::json!(text)
            );
            let back: T = serde_json::from_value(serde_json::json!(text)).expect("from JSON");
            assert_eq!(back, *v);
            assert_eq!(v.to_string(), *text);
        }
    }
}
