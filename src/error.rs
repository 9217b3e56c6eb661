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
    /// A key policy or ownership rule forbids the operation.
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
        }
    }

    /// The short machine-readable name used in JSON error replies.
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
        }
    }

    /// Builds an error from a raw errno (used when a reply comes back from the mount).
    pub fn from_errno(errno: i32, message: String) -> Self {
        match errno {
            libc::ENOENT => Error::NotFound(message),
            libc::EEXIST => Error::AlreadyExists(message),
            libc::EINVAL => Error::InvalidArgument(message),
            libc::ENOKEY => Error::NoKey(message),
            libc::EPERM => Error::PermissionDenied(message),
            libc::EBUSY => Error::Busy(message),
            libc::ENOTEMPTY => Error::NotEmpty(message),
            libc::EXDEV => Error::CrossBucket(message),
            libc::EOPNOTSUPP => Error::Unsupported(message),
            libc::ETIMEDOUT => Error::TimedOut(message),
            libc::EIO => Error::Corrupt(message),
            e => Error::io(message, io::Error::from_raw_os_error(e)),
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

    #[test]
    fn errno_round_trips_for_control_replies() {
        for e in [
            Error::NotFound("a".into()),
            Error::NoKey("a".into()),
            Error::Busy("a".into()),
            Error::InvalidArgument("a".into()),
            Error::PermissionDenied("a".into()),
        ] {
            let back = Error::from_errno(e.errno(), "a".into());
            assert_eq!(back.errno(), e.errno());
            assert_eq!(back.kind(), e.kind());
        }
    }
}
