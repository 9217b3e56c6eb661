//! Everyday tools on a mounted store: cp -a, diff -r, tar, sha256sum, shell appends, a real
//! source tree and a git clone, each checked byte for byte after a remount.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

/// A tree with varied sizes (around chunk boundaries too), nested dirs, an empty dir,
/// symlinks (to files, to dirs, dangling) and a few modes.
fn make_tree(root: &Path, cs: usize) {
    let sizes = [
        0,
        1,
        100,
        4095,
        cs - 1,
        cs,
        cs + 1,
        3 * cs + 17,
        70_000,
        300_000,
    ];
    let mut seed = 0u64;
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
    fs::create_dir_all(root.join("empty/dir")).unwrap();
    fs::write(root.join("a/script.sh"), b"#!/bin/sh\necho hi\n").unwrap();
    fs::set_permissions(root.join("a/script.sh"), fs::Permissions::from_mode(0o755)).unwrap();
    fs::set_permissions(root.join("a/f1.bin"), fs::Permissions::from_mode(0o600)).unwrap();
    std::os::unix::fs::symlink("f2.bin", root.join("lnk-file")).unwrap();
    std::os::unix::fs::symlink("a/b", root.join("lnk-dir")).unwrap();
    std::os::unix::fs::symlink("../../nowhere", root.join("a/dangling")).unwrap();
    fs::write(root.join("name with spaces & ünïcödé.txt"), b"odd name\n").unwrap();
}

/// `find` listing with type, size, mode and mtime of every entry, sorted.
fn listing(m: &TestMount, dir: &str) -> String {
    m.sh(&format!(
        "cd \"{dir}\" && {{ find . ! -type d -printf '%P %y %s %m %T@\\n'; find . -type d -printf '%P %y %m %T@\\n'; }} | LC_ALL=C sort"
    ))
    .ok()
    .stdout
}

#[test]
fn cp_a_of_a_tree_then_diff_r() {
    let mut m = TestMount::new();
    fs::create_dir(m.p("b")).unwrap();
    let cs = m.chunk_size() as usize;
    make_tree(&m.scratch.join("src"), cs);
    m.sh("cp -a \"$X/src\" \"$M/b/dst\"").ok();
    m.sh("diff -r --no-dereference \"$X/src\" \"$M/b/dst\"")
        .ok();
    let want = listing(&m, &m.scratch.join("src").display().to_string());
    let dst = m.p("b/dst").display().to_string();
    assert_eq!(
        listing(&m, &dst),
        want,
        "cp -a keeps types, sizes, modes and mtimes"
    );
    m.remount();
    m.sh("diff -r --no-dereference \"$X/src\" \"$M/b/dst\"")
        .ok();
    assert_eq!(listing(&m, &dst), want, "after remount");
    // And back out again.
    m.sh("cp -a \"$M/b/dst\" \"$X/back\" && diff -r --no-dereference \"$X/src\" \"$X/back\"")
        .ok();
    // cp -a within the mount, and find/du work.
    m.sh("cp -a \"$M/b/dst\" \"$M/b/dst2\" && diff -r --no-dereference \"$M/b/dst\" \"$M/b/dst2\"")
        .ok();
    let n = m.sh("find \"$M/b/dst2\" -type f | wc -l").ok().stdout;
    let want_n = m.sh("find \"$X/src\" -type f | wc -l").ok().stdout;
    assert_eq!(n.trim(), want_n.trim());
}

#[test]
fn rsync_ax_into_out_of_and_between_buckets() {
    let m = TestMount::new();
    fs::create_dir(m.p("b")).unwrap();
    fs::create_dir(m.p("c")).unwrap();
    let cs = m.chunk_size() as usize;
    make_tree(&m.scratch.join("src"), cs);
    m.sh(
        r#"for f in "$X"/src/*; do [ -f "$f" ] && setfattr -n user.note -v kept "$f"; done; true"#,
    )
    .ok();
    // In, with xattrs: the mount's own read-only xattrs must not get in the way (exit 0).
    m.sh(r#"rsync -aX "$X/src/" "$M/b/dst/""#).ok();
    m.sh(r#"diff -r --no-dereference "$X/src" "$M/b/dst""#).ok();
    // A second run with --delete after a change syncs the change.
    m.sh(r#"echo changed > "$X/src/new.txt" && rsync -aX --delete "$X/src/" "$M/b/dst/""#)
        .ok();
    m.sh(r#"diff -r --no-dereference "$X/src" "$M/b/dst""#).ok();
    // Between buckets and back out; the user's xattrs travel, envelopefs's do not.
    m.sh(r#"rsync -aX "$M/b/dst/" "$M/c/copy/" && rsync -aX "$M/c/copy/" "$X/out/""#)
        .ok();
    m.sh(r#"diff -r --no-dereference "$X/src" "$X/out""#).ok();
    let dump = m.sh(r#"getfattr -R -h -d -m - "$X/out""#).ok().stdout;
    assert!(dump.contains("user.note"), "user xattrs travel: {dump}");
    assert!(
        !dump.contains("envelopefs"),
        "no envelopefs xattr leaves the mount: {dump}"
    );
}

#[test]
fn tar_into_and_out_of_the_mount() {
    let mut m = TestMount::new();
    fs::create_dir(m.p("b")).unwrap();
    let cs = m.chunk_size() as usize;
    make_tree(&m.scratch.join("src"), cs);
    // tar from outside, extracting into the mount
    m.sh("tar -C \"$X\" -cf \"$X/in.tar\" src && mkdir \"$M/b/x\" && tar -C \"$M/b/x\" -xpf \"$X/in.tar\"")
        .ok();
    m.sh("diff -r --no-dereference \"$X/src\" \"$M/b/x/src\"")
        .ok();
    // a tar archive written inside the mount, from the mount
    m.sh("tar -C \"$M/b/x\" -cf \"$M/b/out.tar\" src").ok();
    m.remount();
    m.sh("tar -tf \"$M/b/out.tar\" >/dev/null").ok();
    m.sh("mkdir \"$X/out\" && tar -C \"$X/out\" -xpf \"$M/b/out.tar\" && diff -r --no-dereference \"$X/src\" \"$X/out/src\"")
        .ok();
    // streamed through a pipe, out of the mount and into another bucket
    fs::create_dir(m.p("c")).unwrap();
    m.sh("tar -C \"$M/b/x\" -cf - src | tar -C \"$M/c\" -xpf - && diff -r --no-dereference \"$X/src\" \"$M/c/src\"")
        .ok();
}

#[test]
fn sha256sum_of_a_64_mib_file_after_remount() {
    let mut m = TestMount::new();
    fs::create_dir(m.p("b")).unwrap();
    let n = 64usize << 20;
    let data = pattern(64, n);
    fs::write(m.scratch.join("big"), &data).unwrap();
    // Written through the mount in odd-sized writes.
    let mut f = fs::File::create(m.p("b/big")).unwrap();
    for c in data.chunks(777_777) {
        f.write_all(c).unwrap();
    }
    drop(f);
    let want = m.sh("sha256sum < \"$X/big\"").ok().stdout;
    let got = m.sh("sha256sum < \"$M/b/big\"").ok().stdout;
    assert_eq!(got, want, "sha256 before remount");
    m.remount();
    assert_eq!(fs::metadata(m.p("b/big")).unwrap().len(), n as u64);
    let got = m
        .sh_timeout("sha256sum < \"$M/b/big\"", Duration::from_secs(300))
        .ok()
        .stdout;
    assert_eq!(got, want, "sha256 after remount");
    assert_eq!(
        fs::metadata(m.backing_path("b", "big")).unwrap().len(),
        m.expected_backing_len(n as u64)
    );
}

#[test]
fn many_appends_match_a_model() {
    let mut m = TestMount::new();
    fs::create_dir(m.p("b")).unwrap();
    // The shell's >>, one open per line.
    m.sh("i=0; while [ $i -lt 400 ]; do echo \"line $i of the log\" >> \"$M/b/log\"; i=$((i+1)); done")
        .ok();
    let mut model = String::new();
    for i in 0..400 {
        model.push_str(&format!("line {i} of the log\n"));
    }
    assert_eq!(
        String::from_utf8(read(&m.p("b/log"))).unwrap(),
        model,
        "shell appends"
    );
    // Appends of varied sizes from Rust, crossing chunk boundaries.
    let p = m.p("b/bin");
    let mut bin = Vec::new();
    for i in 0..150u64 {
        let piece = pattern(i, (i as usize * 997) % 9000 + 1);
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&p)
            .unwrap();
        f.write_all(&piece).unwrap();
        bin.extend_from_slice(&piece);
        if i % 37 == 0 {
            assert_eq!(
                fs::metadata(&p).unwrap().len(),
                bin.len() as u64,
                "size after append {i}"
            );
        }
    }
    assert_bytes_eq(&read(&p), &bin, "binary appends");
    m.remount();
    assert_eq!(
        String::from_utf8(read(&m.p("b/log"))).unwrap(),
        model,
        "shell appends after remount"
    );
    assert_bytes_eq(&read(&p), &bin, "binary appends after remount");
    assert_eq!(m.sh("wc -l < \"$M/b/log\"").ok().stdout.trim(), "400");
}

#[test]
fn real_source_tree_untarred_checks_after_remount() {
    let mut m = TestMount::new();
    fs::create_dir(m.p("b")).unwrap();
    // A real tree from this machine: kernel headers and this repository's sources.
    let repo = env!("CARGO_MANIFEST_DIR");
    let mut script = format!(
        "tar -C \"{repo}\" --exclude=./target --exclude=./.git -cf \"$X/repo.tar\" . && mkdir \"$X/ref\" \"$X/ref/repo\" && tar -C \"$X/ref/repo\" -xpf \"$X/repo.tar\""
    );
    if Path::new("/usr/include/linux").is_dir() {
        script.push_str(" && tar -C /usr/include -cf \"$X/linux.tar\" linux && tar -C \"$X/ref\" -xpf \"$X/linux.tar\"");
    }
    m.sh(&script).ok();
    m.sh("mkdir \"$M/b/tree\" \"$M/b/tree/repo\" && tar -C \"$M/b/tree/repo\" -xpf \"$X/repo.tar\" && { ! test -f \"$X/linux.tar\" || tar -C \"$M/b/tree\" -xpf \"$X/linux.tar\"; }")
        .ok();
    m.remount();
    m.sh_timeout(
        "diff -r --no-dereference \"$X/ref\" \"$M/b/tree\"",
        Duration::from_secs(300),
    )
    .ok();
    let files = m.sh("find \"$M/b/tree\" -type f | wc -l").ok().stdout;
    assert!(
        files.trim().parse::<u64>().unwrap() > 20,
        "a real tree has files: {files}"
    );
}

#[test]
fn git_clone_of_this_repo_fsck_and_status_after_remount() {
    require("git");
    let repo = env!("CARGO_MANIFEST_DIR");
    assert!(
        Path::new(repo).join(".git").exists(),
        "{repo} is not a git work tree: this test clones the repository it runs in"
    );
    let mut m = TestMount::new();
    fs::create_dir(m.p("b")).unwrap();
    let git = "git -c safe.directory='*' -c user.name=t -c user.email=t@e";
    m.sh(&format!(
        "{git} clone -q --no-hardlinks \"{repo}\" \"$M/b/repo\""
    ))
    .ok();
    let head_src = m
        .sh(&format!("{git} -C \"{repo}\" rev-parse HEAD"))
        .ok()
        .stdout;
    m.remount();
    m.sh(&format!("cd \"$M/b/repo\" && {git} fsck --full --strict"))
        .ok();
    let st = m
        .sh(&format!("cd \"$M/b/repo\" && {git} status --porcelain"))
        .ok();
    assert_eq!(st.stdout, "", "git status is clean after remount");
    let head = m
        .sh(&format!("cd \"$M/b/repo\" && {git} rev-parse HEAD"))
        .ok()
        .stdout;
    assert_eq!(head, head_src);
    // A commit in the mounted clone works and survives a remount.
    m.sh(&format!(
        "cd \"$M/b/repo\" && echo change >> README.envelopefs-test && {git} add -A && {git} commit -q -m test && {git} gc -q"
    ))
    .ok();
    m.remount();
    m.sh(&format!(
        "cd \"$M/b/repo\" && {git} fsck --full --strict && test -z \"$({git} status --porcelain)\""
    ))
    .ok();
}
