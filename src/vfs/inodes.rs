//! The inode table: which names each inode the kernel knows is reachable by.
//!
//! Inodes are path-based: each remembers its names as (parent, name) pairs (several for hard
//! links), and an index from (parent, name) to inode makes unlink and rename O(1). Directory
//! inodes are kept until unmount (they are parents of other entries); other inodes go when
//! the kernel forgets its last lookup.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::sync::RwLock;

use super::ROOT;

#[derive(Debug, Default)]
struct Node {
    names: Vec<(u64, OsString)>,
    lookups: u64,
    is_dir: bool,
}

#[derive(Default)]
struct Table {
    nodes: HashMap<u64, Node>,
    by_name: HashMap<(u64, OsString), u64>,
}

impl Table {
    fn unlink_key(&mut self, key: &(u64, OsString)) -> Option<u64> {
        let ino = self.by_name.remove(key)?;
        if let Some(n) = self.nodes.get_mut(&ino) {
            n.names.retain(|k| k != key);
        }
        Some(ino)
    }
}

/// Why a path could not be built for an inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathError {
    /// The kernel named an inode we do not know (ESTALE).
    Unknown,
    /// The inode has no name left (ENOENT).
    Unlinked,
    /// The parent chain loops (ELOOP); cannot happen unless the table is damaged.
    Loop,
}

/// The table, behind one reader-writer lock (lookups take it briefly; object I/O never does).
pub struct InodeTable {
    t: RwLock<Table>,
}

impl Default for InodeTable {
    fn default() -> Self {
        let mut t = Table::default();
        t.nodes.insert(
            ROOT,
            Node {
                is_dir: true,
                ..Node::default()
            },
        );
        InodeTable { t: RwLock::new(t) }
    }
}

impl InodeTable {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, Table> {
        self.t.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Table> {
        self.t.write().unwrap_or_else(|p| p.into_inner())
    }

    /// The names from the root down to `ino` (empty for the root).
    pub fn components(&self, ino: u64) -> Result<Vec<OsString>, PathError> {
        let t = self.read();
        let mut out = Vec::new();
        let mut cur = ino;
        while cur != ROOT {
            let node = t.nodes.get(&cur).ok_or(PathError::Unknown)?;
            let (parent, name) = node.names.first().ok_or(PathError::Unlinked)?;
            out.push(name.clone());
            cur = *parent;
            if out.len() > 4096 {
                return Err(PathError::Loop);
            }
        }
        out.reverse();
        Ok(out)
    }

    /// Records a lookup of `ino` under (parent, name).
    pub fn remember(&self, ino: u64, parent: u64, name: &OsStr, is_dir: bool) {
        let mut t = self.write();
        let key = (parent, name.to_os_string());
        match t.by_name.get(&key) {
            Some(old) if *old == ino => {}
            Some(_) => {
                t.unlink_key(&key);
            }
            None => {}
        }
        let node = t.nodes.entry(ino).or_default();
        node.lookups += 1;
        node.is_dir = is_dir;
        if let Some(pos) = node.names.iter().position(|k| *k == key) {
            // Most recently used name first: it is the one most likely still valid.
            let k = node.names.remove(pos);
            node.names.insert(0, k);
        } else {
            node.names.insert(0, key.clone());
        }
        t.by_name.insert(key, ino);
    }

    /// A name went away (unlink, rmdir).
    pub fn forget_name(&self, parent: u64, name: &OsStr) {
        self.write().unlink_key(&(parent, name.to_os_string()));
    }

    /// A name moved (rename): the target name, if any, is replaced.
    pub fn rename(&self, parent: u64, name: &OsStr, newparent: u64, newname: &OsStr) {
        let mut t = self.write();
        let from = (parent, name.to_os_string());
        let to = (newparent, newname.to_os_string());
        t.unlink_key(&to);
        if let Some(ino) = t.by_name.remove(&from) {
            if let Some(n) = t.nodes.get_mut(&ino) {
                for k in n.names.iter_mut() {
                    if *k == from {
                        *k = to.clone();
                    }
                }
            }
            t.by_name.insert(to, ino);
        }
    }

    /// Two names swapped their inodes (RENAME_EXCHANGE).
    pub fn exchange(&self, parent: u64, name: &OsStr, newparent: u64, newname: &OsStr) {
        let mut t = self.write();
        let a = (parent, name.to_os_string());
        let b = (newparent, newname.to_os_string());
        let ia = t.unlink_key(&a);
        let ib = t.unlink_key(&b);
        for (ino, key) in [(ia, b), (ib, a)] {
            if let Some(ino) = ino {
                if let Some(n) = t.nodes.get_mut(&ino) {
                    n.names.insert(0, key.clone());
                }
                t.by_name.insert(key, ino);
            }
        }
    }

    /// The kernel forgets `n` lookups of `ino`.
    pub fn forget(&self, ino: u64, n: u64) {
        if ino == ROOT {
            return;
        }
        let mut t = self.write();
        let gone = match t.nodes.get_mut(&ino) {
            Some(node) => {
                node.lookups = node.lookups.saturating_sub(n);
                node.lookups == 0 && !node.is_dir
            }
            None => false,
        };
        if gone {
            if let Some(node) = t.nodes.remove(&ino) {
                for k in node.names {
                    if t.by_name.get(&k) == Some(&ino) {
                        t.by_name.remove(&k);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn comps(t: &InodeTable, ino: u64) -> Vec<String> {
        t.components(ino)
            .unwrap()
            .into_iter()
            .map(|c| c.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn names_follow_renames_links_and_unlinks() {
        let t = InodeTable::default();
        t.remember(10, ROOT, OsStr::new("b"), true);
        t.remember(11, 10, OsStr::new("x"), false);
        assert_eq!(comps(&t, 11), ["b", "x"]);
        t.rename(10, OsStr::new("x"), 10, OsStr::new("y"));
        assert_eq!(comps(&t, 11), ["b", "y"]);
        t.remember(11, 10, OsStr::new("hard"), false); // a hard link
        t.forget_name(10, OsStr::new("hard"));
        assert_eq!(comps(&t, 11), ["b", "y"]);
        t.remember(12, 10, OsStr::new("z"), false);
        t.exchange(10, OsStr::new("y"), 10, OsStr::new("z"));
        assert_eq!(comps(&t, 11), ["b", "z"]);
        assert_eq!(comps(&t, 12), ["b", "y"]);
        t.forget_name(10, OsStr::new("z"));
        assert_eq!(t.components(11), Err(PathError::Unlinked));
        t.forget(11, 2);
        assert_eq!(t.components(11), Err(PathError::Unknown));
        t.forget(10, 1);
        assert_eq!(
            comps(&t, 12),
            ["b", "y"],
            "directories stay while children may refer to them"
        );
    }

    #[test]
    fn a_rename_over_a_name_drops_the_old_inode_from_it() {
        let t = InodeTable::default();
        t.remember(10, ROOT, OsStr::new("b"), true);
        t.remember(11, 10, OsStr::new("a"), false);
        t.remember(12, 10, OsStr::new("c"), false);
        t.rename(10, OsStr::new("a"), 10, OsStr::new("c"));
        assert_eq!(comps(&t, 11), ["b", "c"]);
        assert_eq!(t.components(12), Err(PathError::Unlinked));
    }
}
