//! The inode table: which names each inode the kernel knows is reachable by.
//!
//! Inodes are path-based: each remembers its names as (parent, name) pairs (several for hard
//! links), and an index from (parent, name) to inode makes unlink and rename O(1). Directory
//! inodes are kept until unmount (they are parents of other entries); other inodes go when
//! the kernel forgets its last lookup.
//!
//! A node id is normally the backing inode number plus `INO_BASE`. The backing filesystem
//! reuses inode numbers, though, and the kernel may still hold the old inode under that id (a
//! removed directory that an open file below it pins, an unlinked file still open). Handing
//! the kernel the same id for the new inode would make it reuse the old one: a removed
//! directory refuses every create (ENOENT), an unlinked file's cached pages show through. So
//! when a lookup finds a backing inode whose node has lost all its names while the kernel
//! still holds it, the new inode gets a fresh id above [`SYNTH_BASE`], used until the kernel
//! forgets it.

use crate::sync::RwLockUnpoisoned;
use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::sync::RwLock;
use std::time::SystemTime;

use super::ROOT;

#[derive(Debug, Default)]
struct Node {
    names: Vec<(u64, OsString)>,
    lookups: u64,
    is_dir: bool,
    /// The backing inode's birth time, when the backing filesystem tells it: a node that
    /// lost its names is still the same file when found again with the same birth time (a
    /// hard link the table never saw), and a reused inode number otherwise.
    born: Option<SystemTime>,
}

/// Node ids from here up are given to new inodes that reuse a backing inode number the
/// kernel still holds (see the module documentation).
pub const SYNTH_BASE: u64 = 1 << 62;

#[derive(Default)]
struct Table {
    nodes: HashMap<u64, Node>,
    by_name: HashMap<(u64, OsString), u64>,
    /// Backing id -> the node id its current inode was given instead.
    alias: HashMap<u64, u64>,
    next_synth: u64,
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
        self.t.read_unpoisoned()
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Table> {
        self.t.write_unpoisoned()
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

    /// The node id for the inode whose id from its backing inode number is `backing`.
    pub fn node_id(&self, backing: u64) -> u64 {
        self.read().alias.get(&backing).copied().unwrap_or(backing)
    }

    /// Records a lookup under (parent, name) of the inode whose id from its backing inode
    /// number is `backing`, born at `born` (if known); returns the node id to give the kernel.
    pub fn remember(
        &self,
        backing: u64,
        parent: u64,
        name: &OsStr,
        is_dir: bool,
        born: Option<SystemTime>,
    ) -> u64 {
        let mut t = self.write();
        let key = (parent, name.to_os_string());
        let mut ino = t.alias.get(&backing).copied().unwrap_or(backing);
        // A node the kernel holds whose every name we saw go: the backing inode number was
        // reused, unless the birth times say it is the same file under a name we never saw.
        let dead = t.nodes.get(&ino).is_some_and(|n| {
            n.names.is_empty() && n.lookups > 0 && ino != ROOT && (born.is_none() || n.born != born)
        });
        if dead {
            t.next_synth += 1;
            let old = ino;
            ino = SYNTH_BASE + t.next_synth;
            t.alias.insert(backing, ino);
            tracing::debug!(
                "backing inode {backing} reused while the kernel holds node {old}: node {ino} for {name:?} in {parent}"
            );
        }
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
        node.born = born;
        if let Some(pos) = node.names.iter().position(|k| *k == key) {
            // Most recently used name first: it is the one most likely still valid.
            let k = node.names.remove(pos);
            node.names.insert(0, k);
        } else {
            node.names.insert(0, key.clone());
        }
        t.by_name.insert(key, ino);
        ino
    }

    /// The node a name leads to, if the kernel looked it up.
    pub fn ino_of(&self, parent: u64, name: &OsStr) -> Option<u64> {
        self.read()
            .by_name
            .get(&(parent, name.to_os_string()))
            .copied()
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

    /// The kernel forgets `n` lookups of `ino`; returns whether the node is gone.
    pub fn forget(&self, ino: u64, n: u64) -> bool {
        if ino == ROOT {
            return false;
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
            if ino >= SYNTH_BASE {
                t.alias.retain(|_, v| *v != ino);
            }
        }
        gone
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
        t.remember(10, ROOT, OsStr::new("b"), true, None);
        t.remember(11, 10, OsStr::new("x"), false, None);
        assert_eq!(comps(&t, 11), ["b", "x"]);
        t.rename(10, OsStr::new("x"), 10, OsStr::new("y"));
        assert_eq!(comps(&t, 11), ["b", "y"]);
        t.remember(11, 10, OsStr::new("hard"), false, None); // a hard link
        t.forget_name(10, OsStr::new("hard"));
        assert_eq!(comps(&t, 11), ["b", "y"]);
        t.remember(12, 10, OsStr::new("z"), false, None);
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
    fn a_hard_link_found_after_its_known_name_went_keeps_its_node_id() {
        let t = InodeTable::default();
        let t0 = Some(SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(7));
        t.remember(10, ROOT, OsStr::new("b"), true, None);
        // File 21 has names a and l; the kernel looked up only l, holds it, and l is unlinked.
        assert_eq!(t.remember(21, 10, OsStr::new("l"), false, t0), 21);
        t.forget_name(10, OsStr::new("l"));
        // Found again as a: the same file (same birth time), the same node id.
        assert_eq!(t.remember(21, 10, OsStr::new("a"), false, t0), 21);
        // A file born later under the same backing number is another file.
        t.forget_name(10, OsStr::new("a"));
        let t1 = Some(SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(8));
        assert!(t.remember(21, 10, OsStr::new("n"), false, t1) >= SYNTH_BASE);
    }

    #[test]
    fn a_reused_backing_inode_gets_a_new_id_while_the_kernel_holds_the_old_one() {
        let t = InodeTable::default();
        assert_eq!(t.remember(10, ROOT, OsStr::new("b"), true, None), 10);
        // Directory d (backing 20) with an open file in it, both removed.
        assert_eq!(t.remember(20, 10, OsStr::new("d"), true, None), 20);
        assert_eq!(t.remember(21, 20, OsStr::new("f"), false, None), 21);
        t.forget_name(20, OsStr::new("f"));
        t.forget_name(10, OsStr::new("d"));
        // A new directory reuses backing inode 20: it must not be node 20.
        let e = t.remember(20, 10, OsStr::new("e"), true, None);
        assert!(e >= SYNTH_BASE, "{e}");
        assert_eq!(t.node_id(20), e);
        assert_eq!(comps(&t, e), ["b", "e"]);
        let g = t.remember(22, e, OsStr::new("g"), false, None);
        assert_eq!(comps(&t, g), ["b", "e", "g"]);
        // Looked up again: the same new id.
        assert_eq!(t.remember(20, 10, OsStr::new("e"), true, None), e);
        // An unlinked open file whose number is reused.
        t.forget_name(e, OsStr::new("g"));
        let h = t.remember(22, 10, OsStr::new("h"), false, None);
        assert!(h >= SYNTH_BASE && h != e);
        // Once the kernel forgets the new file, its id is dropped and the number is plain again
        // (the old node 22 is gone too after its own forget).
        t.forget(h, 1);
        t.forget(22, 1);
        assert_eq!(t.node_id(22), 22);
        assert_eq!(t.remember(22, 10, OsStr::new("i"), false, None), 22);
        // A removed directory the kernel has forgotten: its number is reused as is.
        t.forget_name(10, OsStr::new("b2"));
        assert_eq!(t.remember(30, 10, OsStr::new("x"), true, None), 30);
        t.forget_name(10, OsStr::new("x"));
        t.forget(30, 1);
        assert_eq!(t.remember(30, 10, OsStr::new("y"), true, None), 30);
    }

    #[test]
    fn a_rename_over_a_name_drops_the_old_inode_from_it() {
        let t = InodeTable::default();
        t.remember(10, ROOT, OsStr::new("b"), true, None);
        t.remember(11, 10, OsStr::new("a"), false, None);
        t.remember(12, 10, OsStr::new("c"), false, None);
        t.rename(10, OsStr::new("a"), 10, OsStr::new("c"));
        assert_eq!(comps(&t, 11), ["b", "c"]);
        assert_eq!(t.components(12), Err(PathError::Unlinked));
    }
}
