//! Rekey (issue 7 item 6): `object reencrypt --rekey` and `bucket reencrypt --rekey` give
//! objects a new DEK and object id and rewrite their data into a new file that replaces the
//! old one atomically. Offline and through the mount; crashes injected between the steps
//! (`rekey-crash-before-rename`, `rekey-crash-after-rename`) and kill -9 of a mount during a
//! bucket rekey leave every object readable and fsck clean.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use envelopefs::format::records::ObjectHeader;
use serde_json::Value;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::Duration;

fn header(path: &Path) -> ObjectHeader {
    ObjectHeader::decode(&xattr_get(path, "user.envelopefs.header").unwrap()).unwrap()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// fsck --read-data (offline or through the mount) is clean.
#[track_caller]
fn assert_fsck_clean(m: &TestMount) {
    let out = cli(&[
        "--key-file",
        &m.key.display().to_string(),
        "fsck",
        &m.store.display().to_string(),
        "--read-data",
    ]);
    let v = out.json();
    assert_eq!(v["ok"], true, "fsck: {v:#}\n{}", out.stderr);
}

fn tmp_entries(m: &TestMount) -> Vec<String> {
    fs::read_dir(m.store.join(".envelopefs/tmp"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

/// Runs an offline store command with a fault switched on (the process aborts at it).
fn cli_with_fault(m: &TestMount, fault: &str, args: &[&str]) -> CmdOut {
    let (k, v) = fault_env(fault);
    m.cli_store_env(&[(&k, &v)], args)
}

/// `object get`, asserting success: the object's bytes.
fn get(m: &TestMount, bucket: &str, name: &str) -> Vec<u8> {
    let (o, bytes) = m.get_object(bucket, name);
    o.ok();
    bytes
}

#[test]
fn object_rekey_offline_changes_the_dek_and_every_byte_and_keeps_data_and_metadata() {
    let m = TestMount::init_only(None);
    m.cli_store(&["bucket", "create", "--name", "b"]).ok();
    let data = pattern(1, 3 * 4096 + 1000);
    m.put_object("b", "dir/o", &data);
    let backing = m.backing_path("b", "dir/o");
    // Metadata a rekey must keep: mode, times, user xattrs.
    fs::set_permissions(&backing, fs::Permissions::from_mode(0o640)).unwrap();
    xattr_set(&backing, "user.color", b"blue", 0).unwrap();
    let t = std::time::UNIX_EPOCH + Duration::from_secs(1_500_000_000);
    fs::File::options()
        .write(true)
        .open(&backing)
        .unwrap()
        .set_times(fs::FileTimes::new().set_modified(t).set_accessed(t))
        .unwrap();
    let before_h = header(&backing);
    let before_bytes = read(&backing);
    let before_meta = fs::metadata(&backing).unwrap();

    let v = m
        .cli_store(&[
            "object",
            "reencrypt",
            "--bucket-name",
            "b",
            "--name",
            "dir/o",
            "--rekey",
        ])
        .ok()
        .json();
    assert_eq!(v["result"], "REKEYED", "{v}");
    assert_eq!(v["previous_object_id"], hex(&before_h.object_id));
    assert_eq!(v["size"], data.len() as u64);
    let after_h = header(&backing);
    assert_ne!(after_h.object_id, before_h.object_id, "a new object id");
    assert_eq!(v["object_id"], hex(&after_h.object_id));
    assert_ne!(
        after_h.wrapped_dek, before_h.wrapped_dek,
        "a new wrapped DEK"
    );
    assert_eq!(
        after_h.wrapping, before_h.wrapping,
        "same key, same version"
    );
    assert!(after_h.created_ns > before_h.created_ns);
    // Every chunk of the backing file changed (and the preamble: the new object id).
    let after_bytes = read(&backing);
    assert_eq!(after_bytes.len(), before_bytes.len());
    let stride = 4096 + 28;
    for (i, (a, b)) in before_bytes[24..]
        .chunks(stride)
        .zip(after_bytes[24..].chunks(stride))
        .enumerate()
    {
        assert_ne!(a, b, "chunk {i} is unchanged");
        let same = a.iter().zip(b).filter(|(x, y)| x == y).count();
        assert!(
            same < a.len() / 8,
            "chunk {i}: {same} of {} bytes equal",
            a.len()
        );
    }
    assert_ne!(&before_bytes[..24], &after_bytes[..24], "the preamble");
    // Data and metadata kept; a new inode.
    assert_bytes_eq(&get(&m, "b", "dir/o"), &data, "data after the rekey");
    let after_meta = fs::metadata(&backing).unwrap();
    assert_ne!(after_meta.ino(), before_meta.ino(), "a new backing file");
    assert_eq!(after_meta.mode() & 0o7777, 0o640);
    assert_eq!(after_meta.mtime(), 1_500_000_000);
    assert_eq!(
        (after_meta.uid(), after_meta.gid()),
        (before_meta.uid(), before_meta.gid())
    );
    assert_eq!(xattr_get(&backing, "user.color").unwrap(), b"blue");
    assert!(tmp_entries(&m).is_empty(), "{:?}", tmp_entries(&m));
    assert_fsck_clean(&m);
}

#[test]
fn object_rekey_to_other_keys_and_refusals_change_nothing() {
    let m = TestMount::init_only(None);
    m.cli_store(&["key", "create", "--alias", "k2"]).ok();
    m.cli_store(&["bucket", "create", "--name", "b"]).ok();
    let data = pattern(2, 10_000);
    m.put_object("b", "o", &data);
    let backing = m.backing_path("b", "o");
    let ck = m.scratch.join("c.key");
    fs::write(&ck, [9u8; 32]).unwrap();
    let cks = ck.display().to_string();
    let rekey = |extra: &[&str]| {
        let mut a = vec![
            "object",
            "reencrypt",
            "--bucket-name",
            "b",
            "--name",
            "o",
            "--rekey",
        ];
        a.extend_from_slice(extra);
        m.cli_store(&a)
    };
    // To another master key.
    let v = rekey(&["--kms-key-id", "k2"]).ok().json();
    assert_eq!(v["result"], "REKEYED");
    let k2 = v["key_id"].as_str().unwrap().to_string();
    // To a customer key, then rekeyed under the same customer key.
    let v = rekey(&["--encryption-key-file", &cks]).ok().json();
    assert_eq!(v["encryption"], "sse-c");
    let id1 = v["object_id"].clone();
    // Without the source key: refused, nothing changed.
    let before = xattr_get(&backing, "user.envelopefs.header").unwrap();
    let before_ino = fs::metadata(&backing).unwrap().ino();
    let out = rekey(&[]).fails();
    assert!(
        out.stderr.contains("--source-encryption-key-file"),
        "{}",
        out.stderr
    );
    assert_eq!(
        xattr_get(&backing, "user.envelopefs.header").unwrap(),
        before
    );
    assert_eq!(fs::metadata(&backing).unwrap().ino(), before_ino);
    let v = rekey(&[
        "--source-encryption-key-file",
        &cks,
        "--encryption-key-file",
        &cks,
    ])
    .ok()
    .json();
    assert_eq!(v["encryption"], "sse-c");
    assert_ne!(v["object_id"], id1);
    // Back to the bucket key.
    let v = rekey(&["--source-encryption-key-file", &cks]).ok().json();
    assert_eq!(v["encryption"], "master");
    assert_ne!(v["key_id"], k2.as_str());
    assert_bytes_eq(&get(&m, "b", "o"), &data, "after four rekeys");

    // A disabled destination: ENOKEY, nothing changed.
    m.cli_store(&["key", "disable", "k2"]).ok();
    let before = xattr_get(&backing, "user.envelopefs.header").unwrap();
    let out = rekey(&["--kms-key-id", "k2"]).fails();
    assert!(out.stderr.contains("disabled"), "{}", out.stderr);
    assert_eq!(
        xattr_get(&backing, "user.envelopefs.header").unwrap(),
        before
    );
    // A hard-linked object: refused with the reason.
    fs::hard_link(&backing, m.backing_path("b", "link")).unwrap();
    let out = rekey(&[]).fails();
    assert!(out.stderr.contains("hard link"), "{}", out.stderr);
    assert_eq!(
        xattr_get(&backing, "user.envelopefs.header").unwrap(),
        before
    );
    assert!(tmp_entries(&m).is_empty());
}

#[test]
fn a_crash_before_or_after_the_rename_leaves_the_old_or_the_new_object() {
    let m = TestMount::init_only(None);
    m.cli_store(&["bucket", "create", "--name", "b"]).ok();
    let data = pattern(3, 70_000);
    m.put_object("b", "o", &data);
    let backing = m.backing_path("b", "o");
    let id0 = header(&backing).object_id;
    let args = [
        "object",
        "reencrypt",
        "--bucket-name",
        "b",
        "--name",
        "o",
        "--rekey",
    ];

    // Crash with the new file complete but not in place: the old object stays.
    let out = cli_with_fault(&m, "rekey-crash-before-rename", &args);
    assert_ne!(out.code, 0, "the fault aborts the process: {}", out.stderr);
    assert_eq!(
        header(&backing).object_id,
        id0,
        "the old object is in place"
    );
    assert_eq!(tmp_entries(&m).len(), 1, "the new file waits in tmp");
    assert_bytes_eq(&get(&m, "b", "o"), &data, "after a crash before the rename");
    assert!(
        tmp_entries(&m).is_empty(),
        "the next open of the store cleans tmp"
    );
    assert_fsck_clean(&m);

    // Crash after the rename, before the old file is removed: the new object is in place.
    let out = cli_with_fault(&m, "rekey-crash-after-rename", &args);
    assert_ne!(out.code, 0, "the fault aborts the process: {}", out.stderr);
    let id1 = header(&backing).object_id;
    assert_ne!(id1, id0, "the new object is in place");
    assert_eq!(tmp_entries(&m).len(), 1, "the old file waits in tmp");
    assert_bytes_eq(&get(&m, "b", "o"), &data, "after a crash after the rename");
    assert!(tmp_entries(&m).is_empty());
    assert_fsck_clean(&m);
}

/// A bucket rekey interrupted by a crash resumes and rekeys each object exactly once; the
/// SSE-C and hard-linked objects it cannot rekey keep their data keys, so it ends FAILED
/// naming each of them.
#[test]
fn bucket_rekey_offline_resumes_after_a_crash_and_is_idempotent() {
    let m = TestMount::init_only(None);
    m.cli_store(&["key", "create", "--alias", "k"]).ok();
    m.cli_store(&["bucket", "create", "--name", "b", "--kms-key-id", "k"])
        .ok();
    let mut objects = Vec::new();
    for i in 0..12 {
        let name = format!("p{}/o{i}", i % 3);
        let data = pattern(100 + i, 1000 * i as usize + 17);
        m.put_object("b", &name, &data);
        objects.push((name, data));
    }
    let ck = m.scratch.join("c.key");
    fs::write(&ck, [5u8; 32]).unwrap();
    m.put_object("b", "sse", b"customer keyed");
    m.cli_store(&[
        "object",
        "reencrypt",
        "--bucket-name",
        "b",
        "--name",
        "sse",
        "--encryption-key-file",
        &ck.display().to_string(),
    ])
    .ok();
    m.put_object("b", "linked", b"two names");
    fs::hard_link(
        m.backing_path("b", "linked"),
        m.backing_path("b", "linked2"),
    )
    .unwrap();
    let linked_id0 = header(&m.backing_path("b", "linked")).object_id;
    let ids0: Vec<[u8; 16]> = objects
        .iter()
        .map(|(n, _)| header(&m.backing_path("b", n)).object_id)
        .collect();
    m.cli_store(&["key", "rotate", "k"]).ok();

    // The process dies once an object is in place. The job rekeys on two threads, so the
    // other thread may have put a second object in place before the abort.
    let out = cli_with_fault(
        &m,
        "rekey-crash-after-rename",
        &["bucket", "reencrypt", "--bucket-name", "b", "--rekey"],
    );
    assert_ne!(out.code, 0, "{}", out.stderr);
    let list = m
        .cli_store(&["work-request", "list", "--bucket-name", "b"])
        .ok()
        .json();
    let wr = &list.as_array().unwrap()[0];
    assert_eq!(wr["status"], "IN_PROGRESS", "{wr}");
    assert_eq!(wr["operation_type"], "REKEY_BUCKET");
    let id = wr["id"].as_str().unwrap().to_string();
    let scope = wr["scope_created_before_ns"].as_u64().unwrap();
    let done_before: usize = objects
        .iter()
        .zip(&ids0)
        .filter(|((n, _), id0)| header(&m.backing_path("b", n)).object_id != **id0)
        .count();
    assert!(
        (1..=2).contains(&done_before),
        "one object (two with both threads at the rename) was rekeyed before the crash, \
         not {done_before}"
    );

    // Resume: every object it can rekey is rekeyed; the other three are named.
    let out = m
        .cli_store(&["work-request", "wait", &id, "--wait-for-state", "SUCCEEDED"])
        .fails();
    assert!(
        out.stderr.contains("sse") && out.stderr.contains("linked"),
        "the failure names the objects left: {}",
        out.stderr
    );
    let v = m.cli_store(&["work-request", "get", &id]).ok().json();
    assert_eq!(v["status"], "FAILED", "{v}");
    let total = objects.len() as u64;
    let before = done_before as u64;
    assert_eq!(v["objects_rekeyed"], total - before, "{v}");
    assert_eq!(
        v["skipped_reasons"]["rekeyed by this request"], before,
        "{v}"
    );
    assert_eq!(v["objects_failed"], 3, "{v}");
    let mut left: Vec<(String, String)> = v["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["object"].as_str().unwrap().to_string(),
                e["message"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    left.sort();
    let names: Vec<&str> = left.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["linked", "linked2", "sse"], "{v}");
    assert!(left[0].1.contains("hard links"), "{v}");
    assert!(left[2].1.contains("customer-provided key"), "{v}");
    assert_eq!(
        header(&m.backing_path("b", "linked")).object_id,
        linked_id0,
        "the hard-linked object keeps its data key"
    );
    assert_eq!(v["objects_skipped"], before, "{v}");
    for ((n, data), id0) in objects.iter().zip(&ids0) {
        let h = header(&m.backing_path("b", n));
        assert_ne!(h.object_id, *id0, "{n} was rekeyed");
        assert_eq!(
            h.created_ns, scope,
            "{n}: marked as rekeyed by this request"
        );
        assert_bytes_eq(&get(&m, "b", n), data, n);
        let vv = m
            .cli_store(&["object", "head", "--bucket-name", "b", "--name", n])
            .ok()
            .json();
        assert_eq!(vv["key_version"], 2, "{n}: under the newest version");
    }
    assert!(tmp_entries(&m).is_empty());
    assert_fsck_clean(&m);
}

/// Through the mount: open objects are refused (object) or, once the bucket rekey's wait
/// for them is over, left with their old data key and named (the request ends FAILED),
/// writes to open files are never lost, and the name shows the new object at once (stat,
/// read, write).
#[test]
fn rekey_through_the_mount_respects_open_files_and_the_name_works_at_once() {
    let m = TestMount::new();
    fs::create_dir(m.p("b")).unwrap();
    let data = write_pattern(&m.p("b/o"), 9, 40_000);
    write_pattern(&m.p("b/other"), 10, 3_000);
    let ino0 = fs::metadata(m.p("b/o")).unwrap().ino();
    let id0 = xattr_str(&m.p("b/o"), "user.envelopefs.object-id");
    let rekey = "\"$EFS\" --store \"$S\" object reencrypt --bucket-name b --name o --rekey";

    // Open for writing: the object rekey is refused (EBUSY, exit 1); the bucket rekey, told
    // not to wait, rekeys the other object and fails this one.
    let mut f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(m.p("b/o"))
        .unwrap();
    let out = m.sh(rekey).fails();
    assert!(out.stderr.contains("b/o is open"), "{}", out.stderr);
    m.ctl("object reencrypt --bucket-name b --name o --rekey")
        .err(libc::EBUSY);
    let wr = m
        .ctl("bucket reencrypt --bucket-name b --kms-key-id default --rekey --open-wait-seconds 0")
        .ok();
    let done = m.wait_work_request(wr["id"].as_str().unwrap(), Duration::from_secs(60));
    assert_eq!(done["status"], "FAILED", "{done}");
    assert_eq!(done["objects_failed"], 1, "{done}");
    assert_eq!(done["errors"][0]["object"], "o", "{done}");
    assert_eq!(done["objects_skipped"], 0, "{done}");
    assert_eq!(done["objects_rekeyed"], 1, "{done}");
    assert_eq!(xattr_str(&m.p("b/o"), "user.envelopefs.object-id"), id0);
    // Writes through the open handle land in the object.
    use std::io::{Seek, Write};
    f.seek(std::io::SeekFrom::End(0)).unwrap();
    f.write_all(b"written while open").unwrap();
    f.sync_all().unwrap();
    drop(f);
    let mut want = data.clone();
    want.extend_from_slice(b"written while open");

    // Closed: the rekey goes through; stat, read and write work at once.
    let v = m.sh(rekey).ok().json();
    assert_eq!(v["result"], "REKEYED", "{v}");
    let id1 = xattr_str(&m.p("b/o"), "user.envelopefs.object-id");
    assert_ne!(id1, id0);
    let st = fs::metadata(m.p("b/o")).unwrap();
    assert_eq!(st.len(), want.len() as u64);
    assert_ne!(
        st.ino(),
        ino0,
        "the kernel's entry was dropped: the name shows the new inode"
    );
    assert_bytes_eq(&read(&m.p("b/o")), &want, "read after the rekey");
    let ls = m.sh("ls -l \"$M/b\"").ok().stdout;
    assert!(
        ls.contains(&format!(" {} ", want.len())) && ls.contains(" o\n"),
        "{ls}"
    );
    let mut f = fs::OpenOptions::new()
        .append(true)
        .open(m.p("b/o"))
        .unwrap();
    f.write_all(b"+after").unwrap();
    drop(f);
    want.extend_from_slice(b"+after");
    assert_bytes_eq(&read(&m.p("b/o")), &want, "written after the rekey");
    assert!(tmp_entries(&m).is_empty());
    assert_fsck_clean(&m);
}

/// A process that holds an object of the mount open (as its standard input) until dropped.
struct Holder(std::process::Child);

impl Holder {
    #[track_caller]
    fn open(path: &Path) -> Holder {
        let f = fs::File::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
        let child = std::process::Command::new("sleep")
            .arg("600")
            .stdin(f)
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("starting sleep");
        Holder(child)
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A bucket rekey that finds an object open goes on with the others, waits for it to be
/// closed, then rekeys it too: SUCCEEDED, with every object under a new data key.
#[test]
fn a_bucket_rekey_waits_for_an_open_object_and_rekeys_it_once_closed() {
    let m = TestMount::new();
    fs::create_dir(m.p("b")).unwrap();
    let data = write_pattern(&m.p("b/o"), 21, 40_000);
    let other = write_pattern(&m.p("b/other"), 22, 3_000);
    let id_o = xattr_str(&m.p("b/o"), "user.envelopefs.object-id");
    let id_other = xattr_str(&m.p("b/other"), "user.envelopefs.object-id");
    let holder = Holder::open(&m.p("b/o"));

    let wr = m
        .ctl(
            "bucket reencrypt --bucket-name b --kms-key-id default --rekey --open-wait-seconds 600",
        )
        .ok();
    let id = wr["id"].as_str().unwrap().to_string();
    // The other object is done and the request is waiting for the open one.
    let waiting = poll(
        Duration::from_secs(60),
        "the rekey to wait for the open object",
        || {
            let v: Value =
                serde_json::from_str(&m.read_ctl_file(&format!("work-requests/{id}"))).unwrap();
            (v["objects_rekeyed"] == 1).then_some(v)
        },
    );
    assert_eq!(waiting["status"], "IN_PROGRESS", "{waiting}");
    assert_eq!(waiting["objects_skipped"], 0, "{waiting}");
    assert_ne!(
        xattr_str(&m.p("b/other"), "user.envelopefs.object-id"),
        id_other
    );
    assert_eq!(
        xattr_str(&m.p("b/o"), "user.envelopefs.object-id"),
        id_o,
        "not rekeyed while open"
    );

    drop(holder);
    let done = m.wait_work_request(&id, Duration::from_secs(120));
    assert_eq!(done["status"], "SUCCEEDED", "{done}");
    assert_eq!(done["objects_rekeyed"], 2, "{done}");
    assert_eq!(done["objects_skipped"], 0, "{done}");
    assert_eq!(done["objects_failed"], 0, "{done}");
    assert_eq!(done["percent_complete"], 100.0, "{done}");
    assert_ne!(xattr_str(&m.p("b/o"), "user.envelopefs.object-id"), id_o);
    assert_bytes_eq(&read(&m.p("b/o")), &data, "b/o after its rekey");
    assert_bytes_eq(&read(&m.p("b/other")), &other, "b/other after its rekey");
    assert!(tmp_entries(&m).is_empty());
}

/// An object held open for longer than the rekey waits keeps its old data key; the request
/// ends FAILED naming it (record, `work-request get`, the message), and the CLI's
/// `--wait-for-state SUCCEEDED` exits 1.
#[test]
fn a_bucket_rekey_names_the_object_left_open_past_its_wait_and_the_wait_exits_1() {
    let m = TestMount::new();
    fs::create_dir_all(m.p("b/d")).unwrap();
    let data = write_pattern(&m.p("b/d/o"), 23, 5_000);
    write_pattern(&m.p("b/other"), 24, 3_000);
    let id_o = xattr_str(&m.p("b/d/o"), "user.envelopefs.object-id");
    let holder = Holder::open(&m.p("b/d/o"));

    let out = m.cli_store(&[
        "bucket",
        "reencrypt",
        "--bucket-name",
        "b",
        "--kms-key-id",
        "default",
        "--rekey",
        "--open-wait-seconds",
        "1",
        "--wait-for-state",
        "SUCCEEDED",
        "--wait-interval-seconds",
        "1",
    ]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr.contains("ended Failed")
            && out.stderr.contains("b/d/o was open in the mount")
            && out.stderr.contains("old data key"),
        "the message names what was left: {}",
        out.stderr
    );
    let v = out.json();
    assert_eq!(v["status"], "FAILED", "{v}");
    assert_eq!(v["objects_rekeyed"], 1, "{v}");
    assert_eq!(v["objects_failed"], 1, "{v}");
    assert_eq!(v["open_wait_seconds"], 1, "{v}");
    assert_eq!(v["errors"].as_array().unwrap().len(), 1, "{v}");
    assert_eq!(v["errors"][0]["object"], "d/o", "{v}");
    let got = m
        .cli_store(&["work-request", "get", v["id"].as_str().unwrap()])
        .ok()
        .json();
    assert_eq!(got["status"], "FAILED", "{got}");
    assert_eq!(got["errors"], v["errors"], "{got}");

    // Left alone, whole, and still usable through the handle.
    assert_eq!(xattr_str(&m.p("b/d/o"), "user.envelopefs.object-id"), id_o);
    drop(holder);
    assert_bytes_eq(&read(&m.p("b/d/o")), &data, "b/d/o");
    assert_fsck_clean(&m);
}

/// kill -9 of the mount during a bucket rekey: after a remount the request resumes and
/// succeeds, every object reads back exactly with a new object id, fsck is clean.
#[test]
fn kill_9_during_a_bucket_rekey_then_it_resumes_and_every_object_reads_back() {
    const N: usize = 800;
    let mut m = TestMount::init_only(None);
    common::workreq::populate(&m, "photos", N);
    let name = |i: usize| format!("d{}/o{i}", i / 1000);
    let ids0: Vec<[u8; 16]> = (0..N)
        .map(|i| header(&m.backing_path("photos", &name(i))).object_id)
        .collect();
    // 50 ms an object: the job is still running when the test, however slow the machine, has
    // seen its first progress and kills the mount (2 ms let it finish first under load).
    m.mount_env.push(fault_env("slower-work-requests"));
    m.mount();
    let wr = m.ctl("bucket reencrypt --bucket-name photos --rekey").ok();
    let id = wr["id"].as_str().unwrap().to_string();
    let before = poll(
        Duration::from_secs(60),
        "rekey progress to be persisted",
        || {
            let p = m.store.join(format!(".envelopefs/work-requests/{id}.json"));
            let v: Value = serde_json::from_slice(&fs::read(p).ok()?).ok()?;
            let n = v["objects_rekeyed"].as_u64()?;
            (v["status"] == "IN_PROGRESS" && n > 0).then_some(n)
        },
    );
    assert!(
        before < N as u64,
        "the kill must land in the middle of the job"
    );
    let pid = m.daemon_pid().unwrap();
    // SAFETY: SIGKILL to the daemon this test's mount started.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
    poll(Duration::from_secs(30), "the daemon to die", || {
        (!Path::new(&format!("/proc/{pid}")).exists()).then_some(())
    });
    let out = std::process::Command::new("fusermount3")
        .arg("-uz")
        .arg(&m.mnt)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    m.mark_unmounted();
    m.mount_env.clear();
    m.mount();
    let done = m.wait_work_request(&id, Duration::from_secs(300));
    assert_eq!(done["status"], "SUCCEEDED", "{done}");
    let rekeyed = done["objects_rekeyed"].as_u64().unwrap();
    let again = done["skipped_reasons"]["rekeyed by this request"]
        .as_u64()
        .unwrap_or(0);
    // The resumed job starts after the last name whose progress was saved; what was rekeyed
    // after that save and before the kill is found again and skipped, never rekeyed twice.
    assert!(rekeyed >= before, "{done}");
    assert_eq!(rekeyed + again, N as u64, "{done}");
    for (i, id0) in ids0.iter().enumerate() {
        let p = m.p(&format!("photos/{}", name(i)));
        assert_eq!(
            fs::read_to_string(&p).unwrap(),
            format!("object {i}\n"),
            "{}",
            name(i)
        );
        assert_ne!(
            header(&m.backing_path("photos", &name(i))).object_id,
            *id0,
            "{} was rekeyed",
            name(i)
        );
    }
    assert_fsck_clean(&m);
}
