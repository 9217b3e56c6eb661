//! What a mounted store in an object store keeps in an S3 object's user metadata besides the
//! object header (docs/FORMAT.md, "Nodes of a mounted object store"): the POSIX attributes of
//! a node, a symlink's target and the user xattrs.
//!
//! S3 user metadata is text (HTTP header values), so every value here is ASCII:
//!
//! ```text
//! envelopefs-attrs   v=1;k=KIND;m=MODE;u=UID;g=GID;r=RDEV;a=ATIME;t=MTIME;c=CTIME
//!                    KIND one of f d l p s c b; MODE octal (0o7777 bits); times in
//!                    nanoseconds since the epoch (signed); all numbers decimal but MODE
//! envelopefs-target  a symlink's target, base64 (standard alphabet, padded)
//! envelopefs-xattrs  base64 of: per xattr, name length (u8), name, value length (u32 LE),
//!                    value; sorted by name
//! ```

use crate::error::{Error, Result};
use base64::Engine;

/// The metadata key of a node's attributes.
pub const ATTRS_META: &str = "envelopefs-attrs";
/// The metadata key of a symlink's target.
pub const TARGET_META: &str = "envelopefs-target";
/// The metadata key of a node's user xattrs.
pub const XATTRS_META: &str = "envelopefs-xattrs";

/// The attributes encoding's version.
const ATTRS_VERSION: u32 = 1;

/// Longest symlink target kept (bytes): S3 metadata travels in HTTP headers, which servers
/// bound (docs/SEMANTICS-OBJECT-STORE.md).
pub const TARGET_MAX: usize = 1024;
/// Most bytes of encoded user xattrs a node keeps (before base64).
pub const XATTRS_MAX: usize = 4096;

/// A node's kind, as kept in its metadata.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeKind {
    /// An object (a regular file).
    File,
    /// A directory (a marker object `NAME/`).
    Dir,
    /// A symbolic link.
    Symlink,
    /// A named pipe.
    Fifo,
    /// A unix socket.
    Socket,
    /// A character device.
    CharDevice,
    /// A block device.
    BlockDevice,
}

impl NodeKind {
    fn tag(self) -> char {
        match self {
            NodeKind::File => 'f',
            NodeKind::Dir => 'd',
            NodeKind::Symlink => 'l',
            NodeKind::Fifo => 'p',
            NodeKind::Socket => 's',
            NodeKind::CharDevice => 'c',
            NodeKind::BlockDevice => 'b',
        }
    }

    fn of_tag(s: &str) -> Option<NodeKind> {
        Some(match s {
            "f" => NodeKind::File,
            "d" => NodeKind::Dir,
            "l" => NodeKind::Symlink,
            "p" => NodeKind::Fifo,
            "s" => NodeKind::Socket,
            "c" => NodeKind::CharDevice,
            "b" => NodeKind::BlockDevice,
            _ => return None,
        })
    }
}

/// The POSIX attributes of a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeAttrs {
    /// Its kind.
    pub kind: NodeKind,
    /// Permission, set-id and sticky bits (`0o7777`).
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Device number (device nodes), else 0.
    pub rdev: u64,
    /// Access time, ns since the epoch.
    pub atime_ns: i64,
    /// Modification time, ns since the epoch.
    pub mtime_ns: i64,
    /// Change time, ns since the epoch.
    pub ctime_ns: i64,
}

fn corrupt(what: &str, m: impl std::fmt::Display) -> Error {
    Error::Corrupt(format!("{what}: {ATTRS_META} metadata: {m}"))
}

impl NodeAttrs {
    /// The metadata value.
    pub fn encode(&self) -> String {
        format!(
            "v={ATTRS_VERSION};k={};m={:o};u={};g={};r={};a={};t={};c={}",
            self.kind.tag(),
            self.mode & 0o7777,
            self.uid,
            self.gid,
            self.rdev,
            self.atime_ns,
            self.mtime_ns,
            self.ctime_ns
        )
    }

    /// Parses a metadata value: every field once, in any order; an unknown version is
    /// UnsupportedVersion, anything else malformed Corrupt (naming `what`).
    pub fn decode(s: &str, what: &str) -> Result<NodeAttrs> {
        let mut fields: [Option<&str>; 9] = [None; 9];
        const NAMES: [&str; 9] = ["v", "k", "m", "u", "g", "r", "a", "t", "c"];
        for part in s.trim().split(';') {
            let (k, v) = part
                .split_once('=')
                .ok_or_else(|| corrupt(what, format!("{part:?} is not NAME=VALUE")))?;
            let i = NAMES
                .iter()
                .position(|n| *n == k)
                .ok_or_else(|| corrupt(what, format!("unknown field {k:?}")))?;
            if fields[i].replace(v).is_some() {
                return Err(corrupt(what, format!("field {k:?} twice")));
            }
        }
        let get = |i: usize| fields[i].ok_or_else(|| corrupt(what, format!("no {:?}", NAMES[i])));
        let version: u32 = get(0)?.parse().map_err(|_| corrupt(what, "bad version"))?;
        if version != ATTRS_VERSION {
            return Err(Error::UnsupportedVersion(format!(
                "{what}: node attributes of version {version} (this build reads {ATTRS_VERSION})"
            )));
        }
        let kind = NodeKind::of_tag(get(1)?).ok_or_else(|| corrupt(what, "bad kind"))?;
        let mode = u32::from_str_radix(get(2)?, 8)
            .ok()
            .filter(|m| *m <= 0o7777)
            .ok_or_else(|| corrupt(what, "bad mode"))?;
        fn num<T: std::str::FromStr>(v: &str, what: &str, n: &str) -> Result<T> {
            v.parse()
                .map_err(|_| corrupt(what, format!("bad number in {n:?}")))
        }
        Ok(NodeAttrs {
            kind,
            mode,
            uid: num(get(3)?, what, "u")?,
            gid: num(get(4)?, what, "g")?,
            rdev: num(get(5)?, what, "r")?,
            atime_ns: num(get(6)?, what, "a")?,
            mtime_ns: num(get(7)?, what, "t")?,
            ctime_ns: num(get(8)?, what, "c")?,
        })
    }
}

/// A symlink target as a metadata value (ENAMETOOLONG beyond [`TARGET_MAX`]).
pub fn encode_target(target: &[u8]) -> Result<String> {
    if target.len() > TARGET_MAX {
        return Err(Error::NameTooLong(format!(
            "a symlink target of {} bytes: an object store mount keeps at most {TARGET_MAX}",
            target.len()
        )));
    }
    Ok(base64::engine::general_purpose::STANDARD.encode(target))
}

/// A symlink target from its metadata value.
pub fn decode_target(s: &str, what: &str) -> Result<Vec<u8>> {
    let t = base64::engine::general_purpose::STANDARD
        .decode(s.trim())
        .map_err(|e| Error::Corrupt(format!("{what}: {TARGET_META} metadata: {e}")))?;
    if t.is_empty() || t.len() > TARGET_MAX || t.contains(&0) {
        return Err(Error::Corrupt(format!(
            "{what}: {TARGET_META} metadata: not a symlink target"
        )));
    }
    Ok(t)
}

/// User xattrs (sorted by name) as a metadata value; None when there are none. ENOSPC
/// beyond [`XATTRS_MAX`] bytes, E2BIG for a value that cannot be encoded.
pub fn encode_xattrs(xattrs: &[(Vec<u8>, Vec<u8>)]) -> Result<Option<String>> {
    if xattrs.is_empty() {
        return Ok(None);
    }
    let mut out = Vec::new();
    for (name, value) in xattrs {
        let n = u8::try_from(name.len())
            .map_err(|_| Error::NameTooLong("an xattr name of more than 255 bytes".into()))?;
        let v = u32::try_from(value.len())
            .map_err(|_| Error::TooLarge("an xattr value too large".into()))?;
        out.push(n);
        out.extend_from_slice(name);
        out.extend_from_slice(&v.to_le_bytes());
        out.extend_from_slice(value);
    }
    if out.len() > XATTRS_MAX {
        return Err(Error::io(
            format!(
                "the xattrs of a node in an object store mount take at most {XATTRS_MAX} bytes"
            ),
            std::io::Error::from_raw_os_error(libc::ENOSPC),
        ));
    }
    Ok(Some(base64::engine::general_purpose::STANDARD.encode(out)))
}

/// User xattrs from their metadata value, sorted by name.
pub fn decode_xattrs(s: &str, what: &str) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let bad = |m: &str| Error::Corrupt(format!("{what}: {XATTRS_META} metadata: {m}"));
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(s.trim())
        .map_err(|e| bad(&e.to_string()))?;
    if bytes.len() > XATTRS_MAX {
        return Err(bad("too long"));
    }
    let mut out: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    let mut rest = &bytes[..];
    while let Some((&n, r)) = rest.split_first() {
        let n = usize::from(n);
        if n == 0 || r.len() < n + 4 {
            return Err(bad("cut short"));
        }
        let (name, r) = r.split_at(n);
        let (len, r) = r.split_at(4);
        let len = u32::from_le_bytes([len[0], len[1], len[2], len[3]]) as usize;
        if r.len() < len {
            return Err(bad("cut short"));
        }
        let (value, r) = r.split_at(len);
        if out.last().is_some_and(|(last, _)| last.as_slice() >= name) {
            return Err(bad("names not sorted or repeated"));
        }
        out.push((name.to_vec(), value.to_vec()));
        rest = r;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> NodeAttrs {
        NodeAttrs {
            kind: NodeKind::File,
            mode: 0o4755,
            uid: 1000,
            gid: 100,
            rdev: 0,
            atime_ns: 1_700_000_000_123_456_789,
            mtime_ns: -5,
            ctime_ns: 1,
        }
    }

    /// Golden value: a change here is a format change (docs/FORMAT.md).
    #[test]
    fn attrs_golden() {
        let s = sample().encode();
        assert_eq!(
            s, "v=1;k=f;m=4755;u=1000;g=100;r=0;a=1700000000123456789;t=-5;c=1",
            "format version bump required"
        );
        assert_eq!(NodeAttrs::decode(&s, "x").unwrap(), sample());
    }

    #[test]
    fn attrs_every_kind_round_trips() {
        for k in ["f", "d", "l", "p", "s", "c", "b"] {
            let kind = NodeKind::of_tag(k).unwrap();
            let a = NodeAttrs {
                kind,
                rdev: 0x0801,
                ..sample()
            };
            assert_eq!(NodeAttrs::decode(&a.encode(), "x").unwrap(), a);
        }
    }

    /// One negative vector per defect.
    #[test]
    fn attrs_negative() {
        let good = sample().encode();
        let cases: Vec<(String, &str)> = vec![
            (good.replace("v=1", "v=2"), "UnsupportedVersion"),
            (good.replace("k=f", "k=x"), "Corrupt"),
            (good.replace("m=4755", "m=17777"), "Corrupt"),
            (good.replace("m=4755", "m=9"), "Corrupt"),
            (good.replace("u=1000", "u=-1"), "Corrupt"),
            (good.replace(";c=1", ""), "Corrupt"),
            (format!("{good};c=2"), "Corrupt"),
            (format!("{good};z=2"), "Corrupt"),
            (good.replace(";g=", ";g"), "Corrupt"),
            (String::new(), "Corrupt"),
        ];
        for (s, kind) in cases {
            let e = NodeAttrs::decode(&s, "x").unwrap_err();
            assert_eq!(e.kind(), kind, "{s:?}: {e}");
        }
    }

    #[test]
    fn target_and_xattrs_round_trip_and_refuse_bad_input() {
        let t = encode_target(b"../a b/c").unwrap();
        assert_eq!(t, "Li4vYSBiL2M=", "format version bump required");
        assert_eq!(decode_target(&t, "x").unwrap(), b"../a b/c");
        assert_eq!(
            encode_target(&[b'a'; TARGET_MAX + 1]).unwrap_err().errno(),
            libc::ENAMETOOLONG
        );
        assert!(decode_target("", "x").is_err());
        assert!(decode_target("!!", "x").is_err());

        let x = vec![
            (b"user.a".to_vec(), b"1".to_vec()),
            (b"user.b".to_vec(), Vec::new()),
        ];
        let s = encode_xattrs(&x).unwrap().unwrap();
        assert_eq!(
            s, "BnVzZXIuYQEAAAAxBnVzZXIuYgAAAAA=",
            "format version bump required"
        );
        assert_eq!(decode_xattrs(&s, "x").unwrap(), x);
        assert_eq!(encode_xattrs(&[]).unwrap(), None);
        let big = vec![(b"user.a".to_vec(), vec![0u8; XATTRS_MAX])];
        assert_eq!(encode_xattrs(&big).unwrap_err().errno(), libc::ENOSPC);
        // Out of order, cut short.
        let swapped = encode_xattrs(&[x[1].clone()]).unwrap().unwrap();
        let b = base64::engine::general_purpose::STANDARD;
        let mut raw = b.decode(&swapped).unwrap();
        raw.extend(
            b.decode(encode_xattrs(&[x[0].clone()]).unwrap().unwrap())
                .unwrap(),
        );
        assert!(decode_xattrs(&b.encode(&raw), "x").is_err());
        raw.pop();
        assert!(decode_xattrs(&b.encode(&raw[..raw.len() - 3]), "x").is_err());
    }
}
