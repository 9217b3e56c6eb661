//! The core error type and the one errno table.
//!
//! Every layer above the core (the FUSE adapter, the control files, the CLI) reports
//! failures through [`Error`]. [`Error::errno`] is the single place that turns an error into
//! an errno: it is an exhaustive match with no `_` arm, so a new variant does not compile
//! until someone decides its errno. docs/ERRORS.md carries the same table for users.
//!
//! Crypto failures stay opaque: they say which object and which chunk failed, never why.

use std::io;

/// Result alias for the core.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong, with a message a user can act on.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A system call on the backing store failed.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
    /// A named thing (bucket, object, key, work request) does not exist.
    #[error("{0}")]
    NotFound(String),
    /// A named thing exists already.
    #[error("{0}")]
    AlreadyExists(String),
    /// A command, argument or name is malformed.
    #[error("{0}")]
    InvalidArgument(String),
    /// The key needed is missing, disabled, destroyed, or a customer key is not loaded.
    #[error("{0}")]
    NoKey(String),
    /// A key policy, an ownership rule or the mount's layout (the fixed control tree, the
    /// reserved `.envelopefs`, only buckets at the root) forbids the operation.
    #[error("{0}")]
    PermissionDenied(String),
    /// A conflicting operation is in progress.
    #[error("{0}")]
    Busy(String),
    /// Stored bytes failed authentication or do not parse: tampering or corruption.
    #[error("{0}")]
    Corrupt(String),
    /// Stored bytes carry a format version this build does not read.
    #[error("{0}")]
    UnsupportedVersion(String),
    /// The passphrase or key file does not open the keystore (or its sealed body is damaged:
    /// AES-GCM cannot tell the two apart).
    #[error("wrong passphrase or key file (or a damaged keystore): the keystore did not open")]
    WrongSecret,
    /// A directory that must be empty is not.
    #[error("{0}")]
    NotEmpty(String),
    /// An operation that cannot cross buckets (hard link).
    #[error("{0}")]
    CrossBucket(String),
    /// The operation is not supported by envelopefs.
    #[error("{0}")]
    Unsupported(String),
    /// A wait ran out of time (CLI exit code 2).
    #[error("{0}")]
    TimedOut(String),
    /// A change asked of a read-only mount.
    #[error("{0}")]
    ReadOnly(String),
    /// The kernel names an inode the mount no longer knows.
    #[error("{0}")]
    Stale(String),
    /// The mount's inode table leads in a circle (a name cannot be resolved).
    #[error("{0}")]
    Loop(String),
    /// A directory where an object is needed.
    #[error("{0}")]
    IsDirectory(String),
    /// A file or directory handle the mount does not know.
    #[error("{0}")]
    BadHandle(String),
    /// A size or offset past the largest one a file can have.
    #[error("{0}")]
    TooLarge(String),
    /// An extended attribute that does not exist.
    #[error("{0}")]
    NoAttribute(String),
    /// The file's mode does not grant the access asked for.
    #[error("{0}")]
    AccessDenied(String),
    /// A name longer than 255 bytes.
    #[error("{0}")]
    NameTooLong(String),
}

impl Error {
    /// Wraps an I/O error with what was being done.
    pub fn io(context: impl Into<String>, source: io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    /// The errno for this error: FUSE replies and control-file replies both use this.
    pub fn errno(&self) -> i32 {
        match self {
            Error::Io { source, .. } => match source.raw_os_error() {
                Some(e) if e > 0 => e,
                _ => match source.kind() {
                    io::ErrorKind::NotFound => libc::ENOENT,
                    io::ErrorKind::PermissionDenied => libc::EACCES,
                    io::ErrorKind::AlreadyExists => libc::EEXIST,
                    io::ErrorKind::InvalidInput => libc::EINVAL,
                    _ => libc::EIO,
                },
            },
            Error::NotFound(_) => libc::ENOENT,
            Error::AlreadyExists(_) => libc::EEXIST,
            Error::InvalidArgument(_) => libc::EINVAL,
            Error::NoKey(_) => libc::ENOKEY,
            Error::PermissionDenied(_) => libc::EPERM,
            Error::Busy(_) => libc::EBUSY,
            Error::Corrupt(_) => libc::EIO,
            Error::UnsupportedVersion(_) => libc::EIO,
            Error::WrongSecret => libc::EACCES,
            Error::NotEmpty(_) => libc::ENOTEMPTY,
            Error::CrossBucket(_) => libc::EXDEV,
            Error::Unsupported(_) => libc::EOPNOTSUPP,
            Error::TimedOut(_) => libc::ETIMEDOUT,
            Error::ReadOnly(_) => libc::EROFS,
            Error::Stale(_) => libc::ESTALE,
            Error::Loop(_) => libc::ELOOP,
            Error::IsDirectory(_) => libc::EISDIR,
            Error::BadHandle(_) => libc::EBADF,
            Error::TooLarge(_) => libc::EFBIG,
            Error::NoAttribute(_) => libc::ENODATA,
            Error::AccessDenied(_) => libc::EACCES,
            Error::NameTooLong(_) => libc::ENAMETOOLONG,
        }
    }

    /// The short machine-readable name used in JSON error replies (`kind`);
    /// [`Error::from_kind`] reads it back.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Io { .. } => "Io",
            Error::NotFound(_) => "NotFound",
            Error::AlreadyExists(_) => "AlreadyExists",
            Error::InvalidArgument(_) => "InvalidArgument",
            Error::NoKey(_) => "NoKey",
            Error::PermissionDenied(_) => "PermissionDenied",
            Error::Busy(_) => "Busy",
            Error::Corrupt(_) => "Corrupt",
            Error::UnsupportedVersion(_) => "UnsupportedVersion",
            Error::WrongSecret => "WrongSecret",
            Error::NotEmpty(_) => "NotEmpty",
            Error::CrossBucket(_) => "CrossBucket",
            Error::Unsupported(_) => "Unsupported",
            Error::TimedOut(_) => "TimedOut",
            Error::ReadOnly(_) => "ReadOnly",
            Error::Stale(_) => "Stale",
            Error::Loop(_) => "Loop",
            Error::IsDirectory(_) => "IsDirectory",
            Error::BadHandle(_) => "BadHandle",
            Error::TooLarge(_) => "TooLarge",
            Error::NoAttribute(_) => "NoAttribute",
            Error::AccessDenied(_) => "AccessDenied",
            Error::NameTooLong(_) => "NameTooLong",
        }
    }

    /// Rebuilds an error from a JSON error reply (`kind`, `errno`, `message`), as the CLI
    /// does with a reply from the mount: the same variant as [`Error::kind`] named, so a
    /// failed system call stays an `Io` error with its errno. `Io` and kinds this build does
    /// not know become `Io` with the raw errno (the message already ends with the errno's
    /// text, which is not repeated).
    pub fn from_kind(kind: &str, errno: i32, message: String) -> Self {
        match kind {
            "NotFound" => Error::NotFound(message),
            "AlreadyExists" => Error::AlreadyExists(message),
            "InvalidArgument" => Error::InvalidArgument(message),
            "NoKey" => Error::NoKey(message),
            "PermissionDenied" => Error::PermissionDenied(message),
            "Busy" => Error::Busy(message),
            "Corrupt" => Error::Corrupt(message),
            "UnsupportedVersion" => Error::UnsupportedVersion(message),
            "WrongSecret" => Error::WrongSecret,
            "NotEmpty" => Error::NotEmpty(message),
            "CrossBucket" => Error::CrossBucket(message),
            "Unsupported" => Error::Unsupported(message),
            "TimedOut" => Error::TimedOut(message),
            "ReadOnly" => Error::ReadOnly(message),
            "Stale" => Error::Stale(message),
            "Loop" => Error::Loop(message),
            "IsDirectory" => Error::IsDirectory(message),
            "BadHandle" => Error::BadHandle(message),
            "TooLarge" => Error::TooLarge(message),
            "NoAttribute" => Error::NoAttribute(message),
            "AccessDenied" => Error::AccessDenied(message),
            "NameTooLong" => Error::NameTooLong(message),
            _ => {
                let source = io::Error::from_raw_os_error(errno);
                let context = match message.strip_suffix(&format!(": {source}")) {
                    Some(c) => c.to_string(),
                    None => message,
                };
                Error::io(context, source)
            }
        }
    }
}

/// Shorthand: attach a context string to an `io::Result`.
pub trait IoContext<T> {
    /// Maps the error into [`Error::Io`] with `context` computed lazily.
    fn ctx<F: FnOnce() -> String>(self, context: F) -> Result<T>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn ctx<F: FnOnce() -> String>(self, context: F) -> Result<T> {
        self.map_err(|e| Error::io(context(), e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errno_table_matches_design() {
        assert_eq!(Error::NotFound("b".into()).errno(), libc::ENOENT);
        assert_eq!(Error::NoKey("k".into()).errno(), libc::ENOKEY);
        assert_eq!(Error::Busy("w".into()).errno(), libc::EBUSY);
        assert_eq!(Error::InvalidArgument("x".into()).errno(), libc::EINVAL);
        assert_eq!(Error::PermissionDenied("p".into()).errno(), libc::EPERM);
        assert_eq!(Error::Corrupt("c".into()).errno(), libc::EIO);
        assert_eq!(Error::CrossBucket("l".into()).errno(), libc::EXDEV);
        let full = Error::io("write", io::Error::from_raw_os_error(libc::ENOSPC));
        assert_eq!(full.errno(), libc::ENOSPC);
    }

    /// The sample that follows `e` in declaration order (`None` after the last): one error
    /// of every variant, walked from [`first_sample`]. The match has no `_` arm, so a new
    /// variant does not compile until it has an arm here; put it in the walk (the arm before
    /// it names it), and the tests below hold it to docs/ERRORS.md and to the control
    /// replies' round trip.
    fn sample_after(e: &Error) -> Option<Error> {
        let m = || "m".to_string();
        Some(match e {
            Error::Io { .. } => Error::NotFound(m()),
            Error::NotFound(_) => Error::AlreadyExists(m()),
            Error::AlreadyExists(_) => Error::InvalidArgument(m()),
            Error::InvalidArgument(_) => Error::NoKey(m()),
            Error::NoKey(_) => Error::PermissionDenied(m()),
            Error::PermissionDenied(_) => Error::Busy(m()),
            Error::Busy(_) => Error::Corrupt(m()),
            Error::Corrupt(_) => Error::UnsupportedVersion(m()),
            Error::UnsupportedVersion(_) => Error::WrongSecret,
            Error::WrongSecret => Error::NotEmpty(m()),
            Error::NotEmpty(_) => Error::CrossBucket(m()),
            Error::CrossBucket(_) => Error::Unsupported(m()),
            Error::Unsupported(_) => Error::TimedOut(m()),
            Error::TimedOut(_) => Error::ReadOnly(m()),
            Error::ReadOnly(_) => Error::Stale(m()),
            Error::Stale(_) => Error::Loop(m()),
            Error::Loop(_) => Error::IsDirectory(m()),
            Error::IsDirectory(_) => Error::BadHandle(m()),
            Error::BadHandle(_) => Error::TooLarge(m()),
            Error::TooLarge(_) => Error::NoAttribute(m()),
            Error::NoAttribute(_) => Error::AccessDenied(m()),
            Error::AccessDenied(_) => Error::NameTooLong(m()),
            Error::NameTooLong(_) => return None,
        })
    }

    fn first_sample() -> Error {
        Error::io("read", io::Error::from_raw_os_error(libc::EIO))
    }

    /// One error of every variant.
    fn samples() -> Vec<Error> {
        let mut all = vec![first_sample()];
        while let Some(next) = all.last().and_then(sample_after) {
            assert!(
                all.iter().all(|e| e.kind() != next.kind()),
                "the sample walk returns to {}",
                next.kind()
            );
            all.push(next);
        }
        all
    }

    /// The errno names the docs use.
    const ERRNO_NAMES: &[(&str, i32)] = &[
        ("ENOENT", libc::ENOENT),
        ("EEXIST", libc::EEXIST),
        ("EINVAL", libc::EINVAL),
        ("ENOKEY", libc::ENOKEY),
        ("EPERM", libc::EPERM),
        ("EBUSY", libc::EBUSY),
        ("EIO", libc::EIO),
        ("EACCES", libc::EACCES),
        ("ENOTEMPTY", libc::ENOTEMPTY),
        ("EXDEV", libc::EXDEV),
        ("EOPNOTSUPP", libc::EOPNOTSUPP),
        ("ETIMEDOUT", libc::ETIMEDOUT),
        ("EROFS", libc::EROFS),
        ("ESTALE", libc::ESTALE),
        ("ELOOP", libc::ELOOP),
        ("EISDIR", libc::EISDIR),
        ("EBADF", libc::EBADF),
        ("EFBIG", libc::EFBIG),
        ("ENODATA", libc::ENODATA),
        ("ENAMETOOLONG", libc::ENAMETOOLONG),
    ];

    /// docs/ERRORS.md's table lists exactly the variants, each once with its errno.
    #[test]
    fn errors_md_lists_exactly_the_errno_table() {
        let doc = include_str!("../docs/ERRORS.md");
        let rows: Vec<(String, String)> = doc
            .lines()
            .skip_while(|l| !l.starts_with("| error kind | errno |"))
            .skip(2)
            .take_while(|l| l.starts_with('|'))
            .map(|l| {
                let cells: Vec<&str> = l.split('|').map(str::trim).collect();
                (cells[1].to_string(), cells[2].to_string())
            })
            .collect();
        let want: Vec<(String, String)> = samples()
            .iter()
            .map(|e| {
                let errno = match e {
                    Error::Io { .. } => "the system call's errno".to_string(),
                    _ => ERRNO_NAMES
                        .iter()
                        .find(|(_, n)| *n == e.errno())
                        .map(|(name, _)| name.to_string())
                        .unwrap_or_else(|| format!("errno {} (add its name here)", e.errno())),
                };
                (e.kind().to_string(), errno)
            })
            .collect();
        let (mut rows_sorted, mut want) = (rows.clone(), want);
        rows_sorted.sort();
        want.sort();
        assert_eq!(
            rows_sorted, want,
            "docs/ERRORS.md's table against Error::errno"
        );
        for (kind, _) in &rows {
            let back = Error::from_kind(kind, libc::EIO, "m".into());
            assert_eq!(back.kind(), kind, "from_kind does not know {kind}");
        }
    }

    /// A reply from the mount comes back as the error the mount had: same kind, errno and
    /// message. An EIO from the disk stays `Io` (it was `Corrupt`, read as tampering).
    #[test]
    fn control_replies_round_trip_every_kind() {
        let mut all = samples();
        all.push(Error::io(
            "write photos/a",
            io::Error::from_raw_os_error(libc::ENOSPC),
        ));
        for e in all {
            let back = Error::from_kind(e.kind(), e.errno(), e.to_string());
            assert_eq!(back.kind(), e.kind());
            assert_eq!(back.errno(), e.errno(), "{}", e.kind());
            assert_eq!(back.to_string(), e.to_string());
        }
        let disk = Error::from_kind("Io", libc::EIO, "read photos/a: disk".into());
        assert!(matches!(disk, Error::Io { .. }), "{disk:?}");
        assert_eq!(disk.errno(), libc::EIO);
    }

    #[test]
    fn unknown_kinds_keep_the_errno() {
        let e = Error::from_kind("SomethingNewer", libc::ENOSPC, "full".into());
        assert_eq!(e.kind(), "Io");
        assert_eq!(e.errno(), libc::ENOSPC);
        assert!(e.to_string().starts_with("full: "), "{e}");
    }
}
