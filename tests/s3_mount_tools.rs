//! Everyday tools on a store in an object store (a real three-node Garage cluster),
//! mounted: cp -a, rsync -a, tar, find, an editor's write-a-temp-then-rename, git (clone of a
//! local repository, commit, fsck) and SQLite, each checked again after a remount (so from
//! the object store, not from the mount's caches).
//!
//! A missing tool fails the test, saying so (scripts/install-deps.sh installs the test
//! tools); Garage missing is a failure too (tests/common/garage.rs).
#![allow(clippy::unwrap_used)]

mod common;

use common::s3mount::S3Mount;
use common::*;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

const LONG: Duration = Duration::from_secs(600);

/// A tree with varied sizes (around 64 KiB chunk boundaries, and one past the 8 MiB
/// multipart threshold), nested and empty dirs, symlinks and a few modes.
fn make_tree(root: &Path) {
    let cs = 65_536;
    let sizes = [0, 1, 4095, cs - 1, cs, cs + 1, 3 * cs + 17, 300_000];
    let mut seed = 100u64;
    for d in ["", "a", "a/b", "a/b/c", "d e", "x.y/z"] {
        let dir = root.join(d);
        fs::create_dir_all(&dir).unwrap();
        for (i, n) in sizes.iter().enumerate() {
            if (i + d.len()) % 3 == 0 && !d.is_empty() {
                continue;
            }
            seed += 1;
            fs::write(dir.join(format!("f{i}.bin")), pattern(seed, *n)).unwrap();
        }
    }
    fs::write(root.join("a/large.bin"), pattern(7, (9 << 20) + 3)).unwrap();
    fs::create_dir_all(root.join("empty/dir")).unwrap();
    fs::write(root.join("a/script.sh"), b"#!/bin/sh\necho hi\n").unwrap();
    fs::set_permissions(root.join("a/script.sh"), fs::Permissions::from_mode(0o755)).unwrap();
    fs::set_permissions(root.join("a/f1.bin"), fs::Permissions::from_mode(0o600)).unwrap();
    std::os::unix::fs::symlink("f2.bin", root.join("lnk-file")).unwrap();
    std::os::unix::fs::symlink("a/b", root.join("lnk-dir")).unwrap();
    std::os::unix::fs::symlink("../../nowhere", root.join("a/dangling")).unwrap();
    fs::write(root.join("name with spaces & ünïcödé.txt"), b"odd name\n").unwrap();
}

/// `find` listing with type, size, mode and mtime (seconds) of every entry, sorted.
fn listing(m: &S3Mount, dir: &str) -> String {
    m.sh(&format!(
        "cd \"{dir}\" && {{ find . ! -type d -printf '%P %y %s %m %TY%Tm%Td%TH%TM%TS\\n' | sed 's/\\.[0-9]*$//'; find . -type d -printf '%P %y %m\\n'; }} | LC_ALL=C sort"
    ))
    .ok()
    .stdout
}

#[test]
fn cp_rsync_tar_and_find_on_an_s3_mount() {
    for t in ["cp", "rsync", "tar", "find", "diff"] {
        require(t);
    }
    let mut m = S3Mount::new("tools");
    m.bucket("b");
    m.bucket("c");
    make_tree(&m.scratch.join("src"));
    let want = listing(&m, &m.scratch.join("src").display().to_string());

    // cp -a in, and within the mount.
    m.sh_timeout("cp -a \"$X/src\" \"$M/b/cp\"", LONG).ok();
    m.sh("diff -r --no-dereference \"$X/src\" \"$M/b/cp\"").ok();
    assert_eq!(
        listing(&m, &m.p("b/cp").display().to_string()),
        want,
        "cp -a keeps types, sizes, modes and mtimes"
    );
    // rsync -a in; a second run with --delete after a change syncs the change.
    m.sh_timeout("rsync -a \"$X/src/\" \"$M/b/rs/\"", LONG).ok();
    m.sh("diff -r --no-dereference \"$X/src\" \"$M/b/rs\"").ok();
    m.sh("echo changed > \"$X/src/new.txt\" && rm \"$X/src/a/f0.bin\" && rsync -a --delete \"$X/src/\" \"$M/b/rs/\"")
        .ok();
    m.sh("diff -r --no-dereference \"$X/src\" \"$M/b/rs\"").ok();
    // The listings (modes, sizes, mtimes) are compared at the end, so that a difference
    // does not hide what the later steps would find.
    let want = listing(&m, &m.scratch.join("src").display().to_string());
    let mut listings = vec![("rsync -a", listing(&m, &m.p("b/rs").display().to_string()))];
    // tar: an archive from outside extracted in; one written in the mount; a pipe between
    // buckets.
    m.sh("tar -C \"$X\" -cf \"$X/in.tar\" src && mkdir \"$M/b/tar\" && tar -C \"$M/b/tar\" -xpf \"$X/in.tar\"")
        .ok();
    m.sh("diff -r --no-dereference \"$X/src\" \"$M/b/tar/src\"")
        .ok();
    listings.push((
        "tar -xpf",
        listing(&m, &m.p("b/tar/src").display().to_string()),
    ));
    m.sh("tar -C \"$M/b/tar\" -cf \"$M/b/out.tar\" src").ok();
    m.sh("tar -C \"$M/b/tar\" -cf - src | tar -C \"$M/c\" -xpf - && diff -r --no-dereference \"$X/src\" \"$M/c/src\"")
        .ok();
    // find sees what is there.
    let n = m.sh("find \"$M/b/rs\" -type f | wc -l").ok().stdout;
    let want_n = m.sh("find \"$X/src\" -type f | wc -l").ok().stdout;
    assert_eq!(n.trim(), want_n.trim(), "find -type f");
    let l = m.sh("find \"$M/b/rs\" -type l | wc -l").ok().stdout;
    assert_eq!(l.trim(), "3", "find -type l");
    let big = m
        .sh("find \"$M/b\" -type f -size +8M -name large.bin | wc -l")
        .ok()
        .stdout;
    assert_eq!(big.trim(), "3", "find -size");

    m.remount();
    for d in ["b/cp", "b/rs", "b/tar/src", "c/src"] {
        let dd = m.p(d).display().to_string();
        let o = m.sh(&format!("diff -r --no-dereference \"$X/src\" \"{dd}\""));
        if d == "b/cp" {
            // cp -a ran before the change to src.
            assert!(
                o.stdout.contains("new.txt") && o.stdout.contains("f0.bin"),
                "{o:?}"
            );
        } else {
            o.ok();
        }
    }
    listings.push((
        "rsync -a, after remount",
        listing(&m, &m.p("b/rs").display().to_string()),
    ));
    m.sh("mkdir \"$X/out\" && tar -C \"$X/out\" -xpf \"$M/b/out.tar\" && tar -tf \"$M/b/out.tar\" >/dev/null")
        .ok();
    // Out again with rsync, then cp -a between buckets.
    m.sh_timeout(
        "rsync -a \"$M/b/rs/\" \"$X/back/\" && diff -r --no-dereference \"$X/src\" \"$X/back\"",
        LONG,
    )
    .ok();
    m.sh_timeout(
        "cp -a \"$M/b/rs\" \"$M/c/rs\" && diff -r --no-dereference \"$X/src\" \"$M/c/rs\"",
        LONG,
    )
    .ok();
    m.sh("rm -rf \"$M/b/cp\" \"$M/b/tar\" && ls \"$M/b\"").ok();
    assert!(!m.p("b/cp").exists());
    let differ: Vec<String> = listings
        .iter()
        .filter(|(_, got)| *got != want)
        .map(|(what, got)| {
            let first = got
                .lines()
                .zip(want.lines())
                .find(|(g, w)| g != w)
                .map(|(g, w)| format!("got {g:?}, want {w:?}"))
                .unwrap_or_else(|| "a different number of entries".into());
            format!("{what}: {first}")
        })
        .collect();
    assert!(
        differ.is_empty(),
        "types, sizes, modes or mtimes not kept:\n{}",
        differ.join("\n")
    );
}

#[test]
fn an_editor_save_and_git_on_an_s3_mount() {
    require("git");
    let mut m = S3Mount::new("git");
    m.bucket("b");

    // An editor's save: write a temp file beside, fsync it, keep a backup, rename over.
    m.sh(concat!(
        "cd \"$M/b\" && printf 'version 1\\n' > notes.txt && ",
        "printf 'version 2\\n' > .notes.txt.swp && sync .notes.txt.swp && ",
        "mv notes.txt notes.txt~ && mv .notes.txt.swp notes.txt && rm notes.txt~ && ",
        "test \"$(cat notes.txt)\" = 'version 2' && ls -a"
    ))
    .ok();
    // The same, the way editors that keep the inode do not: rename the temp straight over.
    m.sh(concat!(
        "cd \"$M/b\" && printf 'version 3\\n' > .notes.tmp && mv -f .notes.tmp notes.txt && ",
        "test \"$(cat notes.txt)\" = 'version 3'"
    ))
    .ok();

    // A local repository with a few commits, cloned into the mount.
    let git = "git -c user.name=t -c user.email=t@example.invalid -c init.defaultBranch=main -c protocol.file.allow=always";
    m.sh(&format!(
        "set -e; mkdir \"$X/repo\" && cd \"$X/repo\" && {git} init -q . && \
         for i in 1 2 3 4 5; do seq 1 $((i * 1000)) > f$i.txt; mkdir -p d$i; echo $i > d$i/n; \
         {git} add -A; {git} commit -q -m \"commit $i\"; done"
    ))
    .ok();
    m.sh_timeout(&format!("{git} clone -q \"$X/repo\" \"$M/b/clone\""), LONG)
        .ok();
    m.sh(&format!(
        "set -e; cd \"$M/b/clone\" && {git} fsck --full --strict && \
         echo change >> f1.txt && printf 'new\\n' > new.txt && {git} add -A && \
         {git} commit -q -m 'in the mount' && {git} gc -q && {git} fsck --full --strict && \
         {git} status --porcelain"
    ))
    .ok();
    m.remount();
    assert_eq!(read(&m.p("b/notes.txt")), b"version 3\n");
    let out = m
        .sh(&format!(
            "set -e; cd \"$M/b/clone\" && {git} fsck --full --strict && \
             {git} log --oneline | wc -l && {git} status --porcelain && cat new.txt"
        ))
        .ok()
        .stdout;
    assert_eq!(out, "6\nnew\n", "git log and status after remount");
    // And back out: a clone of the clone, outside the mount, is the same history.
    m.sh_timeout(
        &format!(
            "set -e; {git} clone -q \"$M/b/clone\" \"$X/again\" && cd \"$X/again\" && \
             {git} fsck --full --strict && test \"$({git} rev-parse HEAD)\" = \"$(cd \"$M/b/clone\" && {git} rev-parse HEAD)\""
        ),
        LONG,
    )
    .ok();
}

fn sql(m: &S3Mount, python: bool, db: &str, script: &str) -> String {
    let out = if python {
        let py =
            "import sqlite3,sys\nc=sqlite3.connect(sys.argv[1], isolation_level=None)\n\
             r=[]\nfor s in sys.argv[2].split(';'):\n    s=s.strip()\n    \
             if s: r+=c.execute(s).fetchall()\nprint('\\n'.join('|'.join(str(x) for x in t) for t in r))\n";
        let mut c = std::process::Command::new("python3");
        c.arg("-c").arg(py).arg(m.p(db)).arg(script);
        run_cmd(&mut c, LONG)
    } else {
        let mut c = std::process::Command::new("sqlite3");
        c.arg("-batch").arg(m.p(db)).arg(script);
        run_cmd(&mut c, LONG)
    };
    out.ok().stdout.trim().to_string()
}

#[test]
fn sqlite_on_an_s3_mount() {
    // The sqlite3 CLI, or else Python's sqlite3 module.
    let python = !have("sqlite3");
    if python {
        require("python3");
        let o = run_cmd(
            std::process::Command::new("python3").args(["-c", "import sqlite3"]),
            Duration::from_secs(60),
        );
        assert_eq!(
            o.code, 0,
            "this test needs the sqlite3 CLI or Python's sqlite3 module \
             (scripts/install-deps.sh installs the test tools): {}",
            o.stderr
        );
    }
    let mut m = S3Mount::new("sqlite");
    m.bucket("b");
    for (db, mode) in [("b/rollback.db", "DELETE"), ("b/wal.db", "WAL")] {
        let jm = sql(&m, python, db, &format!("PRAGMA journal_mode={mode}"));
        assert_eq!(jm.to_uppercase(), mode, "journal mode of {db}");
        sql(
            &m,
            python,
            db,
            "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT, b BLOB); CREATE INDEX tv ON t(v)",
        );
        for batch in 0..10 {
            let mut s = String::from("BEGIN;");
            for i in 0..200 {
                let id = batch * 200 + i;
                s += &format!(
                    "INSERT INTO t(id, v, b) VALUES({id}, 'row {id}', randomblob({}));",
                    (id % 7) * 300
                );
            }
            s += "COMMIT";
            sql(&m, python, db, &s);
        }
        sql(&m, python, db, "BEGIN; DELETE FROM t WHERE id % 5 = 0; UPDATE t SET v = v || ' x' WHERE id % 3 = 0; COMMIT");
        assert_eq!(
            sql(&m, python, db, "SELECT count(*) FROM t"),
            "1600",
            "{db}"
        );
        assert_eq!(sql(&m, python, db, "PRAGMA integrity_check"), "ok", "{db}");
        if mode == "WAL" {
            sql(&m, python, db, "PRAGMA wal_checkpoint(TRUNCATE)");
        }
        sql(&m, python, db, "VACUUM");
    }
    m.remount();
    for db in ["b/rollback.db", "b/wal.db"] {
        assert_eq!(
            sql(&m, python, db, "PRAGMA integrity_check"),
            "ok",
            "{db} after remount"
        );
        assert_eq!(
            sql(
                &m,
                python,
                db,
                "SELECT count(*), sum(id) FROM t WHERE v LIKE '% x'"
            ),
            {
                let ids: Vec<u64> = (0..2000).filter(|i| i % 5 != 0 && i % 3 == 0).collect();
                format!("{}|{}", ids.len(), ids.iter().sum::<u64>())
            },
            "{db} after remount"
        );
    }
}
