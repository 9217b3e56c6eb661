//! A byte-for-byte picture of a store (contents and xattrs), to prove a command changed
//! nothing.
#![allow(dead_code)]

use envelopefs::store::xattr;
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

/// Contents and sorted xattrs of every entry.
pub type Snapshot = BTreeMap<PathBuf, (Vec<u8>, Vec<(Vec<u8>, Vec<u8>)>)>;

/// Every file and directory of a store with its bytes and xattrs (to prove fsck writes
/// nothing). The lock file's content is included too (it stays empty).
pub fn store_snapshot(root: &Path) -> Snapshot {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        let meta = fs::symlink_metadata(&p).expect("lstat");
        let mut xs: Vec<(Vec<u8>, Vec<u8>)> = xattr::list(&p)
            .expect("listxattr")
            .into_iter()
            .map(|n| {
                let v = xattr::get(&p, &n).expect("getxattr").unwrap_or_default();
                (n, v)
            })
            .collect();
        xs.sort();
        let bytes = if meta.is_dir() {
            for e in fs::read_dir(&p).expect("readdir") {
                stack.push(e.expect("entry").path());
            }
            b"<dir>".to_vec()
        } else if meta.is_file() {
            fs::read(&p).expect("read")
        } else {
            b"<other>".to_vec()
        };
        out.insert(p, (bytes, xs));
    }
    out
}
