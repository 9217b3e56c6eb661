//! Crash tests: the mount process is killed with SIGKILL during heavy writes with fsync,
//! during a create storm and during a bucket re-encrypt. After a remount: fsck (with
//! --read-data) is clean, everything fsynced before the kill reads back intact, no object
//! lacks its header, and an interrupted work request resumes and succeeds.

mod common;

use common::*;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// SIGKILL to the mount daemon, then what an admin does: lazy unmount, mount again.
fn kill9_and_remount(m: &mut TestMount) {
    let pid = m.daemon_pid().expect("daemon pid");
    // SAFETY: SIGKILL to the daemon this test's mount started.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
    remount_after_death(m, pid);
}

/// Waits for the dead daemon `pid` to be gone, then lazily unmounts what it left.
fn unmount_after_death(m: &mut TestMount, pid: i32) {
    poll(Duration::from_secs(30), "the daemon to die", || {
        (!Path::new(&format!("/proc/{pid}")).exists()).then_some(())
    });
    let out = std::process::Command::new("fusermount3")
        .arg("-uz")
        .arg(&m.mnt)
        .output()
        .expect("fusermount3");
    assert!(out.status.success(), "fusermount3 -uz: {out:?}");
    m.mark_unmounted();
}

/// The daemon died (killed, or a fault killed it): lazy unmount, mount again.
fn remount_after_death(m: &mut TestMount, pid: i32) {
    unmount_after_death(m, pid);
    m.mount();
}

/// fsck --read-data through the remounted store: its report.
fn fsck_report(m: &TestMount) -> serde_json::Value {
    let out = cli(&["fsck", &m.store.display().to_string(), "--read-data"]);
    assert!(
        out.code == 0 || out.code == 1,
        "fsck ran: {}\n{}",
        out.stdout,
        out.stderr
    );
    out.json()
}

/// fsck --read-data is clean, and saw at least `min_objects` objects.
fn assert_fsck_clean(m: &TestMount, min_objects: u64) {
    let v = fsck_report(m);
    assert_eq!(v["ok"], true, "fsck after the crash: {v:#}");
    assert!(v["objects"].as_u64().unwrap_or(0) >= min_objects, "{v}");
}

type Durable = Arc<Mutex<Vec<(PathBuf, Vec<u8>)>>>;

/// Runs `threads` writers until `stop`; each records what it fsynced.
fn writers(
    threads: usize,
    stop: &Arc<AtomicBool>,
    durable: &Durable,
    body: fn(usize, usize, &Path) -> Option<Vec<u8>>,
    dir: &Path,
) -> Vec<std::thread::JoinHandle<()>> {
    (0..threads)
        .map(|t| {
            let stop = Arc::clone(stop);
            let durable = Arc::clone(durable);
            let dir = dir.to_path_buf();
            std::thread::spawn(move || {
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    let p = dir.join(format!("t{t}-{i}"));
                    match body(t, i, &p) {
                        Some(data) => durable
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .push((p, data)),
                        None => return, // the mount is gone
                    }
                    i += 1;
                }
            })
        })
        .collect()
}

/// Writes 64 KiB..1 MiB in uneven pieces, then fsync: durable only once fsync returned.
fn heavy_file(t: usize, i: usize, p: &Path) -> Option<Vec<u8>> {
    let len = 65_536 + ((t * 7919 + i * 104_729) % (1 << 20));
    let data = pattern((t * 100_000 + i) as u64, len);
    let mut f = fs::File::create(p).ok()?;
    for piece in data.chunks(12_345) {
        f.write_all(piece).ok()?;
    }
    f.sync_all().ok()?;
    Some(data)
}

/// A small file, fsynced.
fn small_file(t: usize, i: usize, p: &Path) -> Option<Vec<u8>> {
    let data = format!("storm {t} {i}\n").into_bytes();
    let mut f = fs::File::create(p).ok()?;
    f.write_all(&data).ok()?;
    f.sync_all().ok()?;
    Some(data)
}

/// Runs the writers, kills the mount, remounts and checks: fsck (with --read-data) is
/// entirely clean, files that were being written at the kill included (the write journal
/// repairs what the kill cut), everything fsynced reads back, nothing lacks its header.
fn crash_during(body: fn(usize, usize, &Path) -> Option<Vec<u8>>, threads: usize, run: Duration) {
    let mut m = TestMount::new();
    fs::create_dir(m.p("b")).expect("bucket");
    // Data from before the run, fsynced: it must come through untouched.
    let old = write_pattern(&m.p("b/old"), 1, 300_000);
    fs::File::open(m.p("b/old"))
        .and_then(|f| f.sync_all())
        .expect("fsync old");
    let stop = Arc::new(AtomicBool::new(false));
    let durable: Durable = Arc::new(Mutex::new(Vec::new()));
    let hs = writers(threads, &stop, &durable, body, &m.p("b"));
    std::thread::sleep(run);
    kill9_and_remount(&mut m);
    stop.store(true, Ordering::Relaxed);
    for h in hs {
        let _ = h.join();
    }
    let durable = std::mem::take(&mut *durable.lock().unwrap_or_else(|e| e.into_inner()));
    assert!(
        durable.len() >= 5,
        "the writers got going: {}",
        durable.len()
    );
    // The writers may have kept writing to the new mount after the remount (their paths
    // are the same); those files are complete too, so checking what they recorded holds.
    let report = fsck_report(&m);
    assert!(
        report["objects"].as_u64().unwrap_or(0) > durable.len() as u64,
        "{report}"
    );
    assert_eq!(report["ok"], true, "fsck after the crash: {report:#}");
    drop_caches();
    assert_bytes_eq(&read(&m.p("b/old")), &old, "b/old");
    for (p, data) in &durable {
        assert_bytes_eq(&read(p), data, &p.display().to_string());
    }
    // Every other file in the bucket opens and reads (no headerless object).
    for e in fs::read_dir(m.p("b")).expect("readdir") {
        let p = e.expect("entry").path();
        fs::read(&p).unwrap_or_else(|e| panic!("{} after the crash: {e}", p.display()));
    }
    assert_eq!(
        fs::read_dir(m.store.join(".envelopefs/tmp"))
            .expect("tmp")
            .count(),
        0,
        "temporaries were cleared at the remount"
    );
}

/// Four writers of 64 KiB..1 MiB files in uneven pieces, each fsynced; the mount is killed
/// in the middle, three times over. Before the write journal, about one run in fifteen left a
/// chunk that failed authentication in a file being written at the kill (a `pwrite` cut at a
/// page boundary inside a chunk); `a_change_cut_by_a_kill_...` below hits that case every time.
#[test]
fn kill_9_during_heavy_writes_with_fsync() {
    for _ in 0..3 {
        crash_during(heavy_file, 4, Duration::from_millis(2000));
    }
}

#[test]
fn kill_9_during_a_create_storm() {
    crash_during(small_file, 8, Duration::from_millis(1500));
}

#[test]
fn kill_9_during_a_bucket_reencrypt_then_it_resumes_and_fsck_is_clean() {
    let (k, v) = fault_env("slow-work-requests");
    std::env::set_var(k, v);
    const N: usize = 2000;
    let mut m = TestMount::init_only(None);
    common::workreq::populate(&m, "photos", N);
    m.mount();
    m.ctl("key rotate k").ok();
    let wr = m.ctl("bucket reencrypt --bucket-name photos").ok();
    let id = wr["id"].as_str().expect("id").to_string();
    poll(Duration::from_secs(60), "progress to be persisted", || {
        let p = m.store.join(format!(".envelopefs/work-requests/{id}.json"));
        let v: serde_json::Value = serde_json::from_slice(&fs::read(p).ok()?).ok()?;
        (v["status"] == "IN_PROGRESS" && v["objects_rewrapped"].as_u64()? > 0).then_some(())
    });
    kill9_and_remount(&mut m);
    let done = m.wait_work_request(&id, Duration::from_secs(120));
    assert_eq!(done["status"], "SUCCEEDED", "{done}");
    assert_fsck_clean(&m, N as u64);
    for i in (0..N).step_by(97) {
        let f = m.p(&format!("photos/d{}/o{i}", i / 1000));
        assert_eq!(
            fs::read_to_string(&f).expect("read"),
            format!("object {i}\n")
        );
        assert_eq!(xattr_str(&f, "user.envelopefs.key-version"), "2");
    }
}

type Change = fn(&fs::File, usize, usize) -> std::io::Result<()>;

/// `old` with `new` written at `at`.
fn overwritten(old: &[u8], new: &[u8], at: usize) -> Vec<u8> {
    let mut v = old.to_vec();
    v[at..at + new.len()].copy_from_slice(new);
    v
}

/// Every kind of change to an object, cut by a kill at its worst point (fault
/// `die-mid-write`: the process writes the bytes up to the first page boundary inside a
/// chunk and dies, as a kill during `pwrite` leaves it; a shrink dies between rewriting the
/// final chunk and cutting the file). Without the write journal each of these left a chunk
/// that failed authentication or a size no object can have. After the next mount the object
/// is whole: as it was before the change (growth and shrinking are undone), or with the
/// change complete (an overwrite, whose new bytes the journal holds, is completed); the
/// mount log says so, and fsck --read-data is clean.
#[test]
fn a_change_cut_by_a_kill_is_repaired_at_the_next_mount() {
    use std::os::unix::fs::FileExt;
    let mut m = TestMount::init_only(None);
    m.mount_env.push(fault_env("die-mid-write"));
    m.mount();
    fs::create_dir(m.p("b")).expect("bucket");
    let cs = m.chunk_size() as usize;
    let old = pattern(7, 5 * cs + 1234);
    let mut f = fs::File::create(m.p("b/f")).expect("create");
    f.write_all(&old).expect("write");
    f.sync_all().expect("fsync");
    drop(f);
    let inside = overwritten(&old, &pattern(8, 3 * cs), cs / 2);
    let at_end = overwritten(&old, &pattern(8, 100), old.len() - 200);
    let cases: [(&str, Change, &[u8]); 7] = [
        (
            "overwrite inside",
            |f, cs, _| f.write_all_at(&pattern(8, 3 * cs), (cs / 2) as u64),
            &inside,
        ),
        (
            "overwrite of the final chunk",
            |f, _, len| f.write_all_at(&pattern(8, 100), (len - 200) as u64),
            &at_end,
        ),
        (
            "append",
            |f, cs, len| f.write_all_at(&pattern(9, 2 * cs + 77), len as u64),
            &old,
        ),
        (
            "write across the end",
            |f, cs, len| f.write_all_at(&pattern(10, 3 * cs), (len - 100) as u64),
            &old,
        ),
        (
            "write past the end",
            |f, cs, len| f.write_all_at(b"sparse", (len + 5 * cs) as u64),
            &old,
        ),
        ("shrink", |f, cs, _| f.set_len(cs as u64 + 5), &old),
        (
            "grow by truncate",
            |f, cs, len| f.set_len((len + 3 * cs) as u64),
            &old,
        ),
    ];
    for (i, (what, change, want)) in cases.iter().enumerate() {
        fs::rename(m.p("b/f"), m.p("b/envelopefs-fault-die")).expect("rename to the fault name");
        let pid = m.daemon_pid().expect("daemon pid");
        let f = fs::OpenOptions::new()
            .write(true)
            .open(m.p("b/envelopefs-fault-die"))
            .expect("open for writing");
        let r = change(&f, cs, old.len());
        assert!(
            r.is_err(),
            "{what}: the daemon died during the change: {r:?}"
        );
        drop(f);
        remount_after_death(&mut m, pid);
        let repaired = m
            .log()
            .matches("interrupted by a crash was repaired")
            .count();
        assert!(
            repaired > i,
            "{what}: the mount log reports the repair:\n{}",
            m.log()
        );
        drop_caches();
        assert_bytes_eq(&read(&m.p("b/envelopefs-fault-die")), want, what);
        assert_fsck_clean(&m, 1);
        fs::rename(m.p("b/envelopefs-fault-die"), m.p("b/f")).expect("rename back");
        fs::write(m.p("b/f"), &old).expect("the old content again");
    }
}

/// Between the crash and the next open, offline fsck (which changes nothing) reports the cut
/// write from the journal, and the torn chunk; opening the store repairs it.
#[test]
fn offline_fsck_reports_a_cut_write_until_the_store_is_opened() {
    use std::os::unix::fs::FileExt;
    let mut m = TestMount::init_only(None);
    m.mount_env.push(fault_env("die-mid-write"));
    m.mount();
    fs::create_dir(m.p("b")).expect("bucket");
    let old = pattern(3, 40_000);
    fs::write(m.p("b/envelopefs-fault-die"), &old).expect_err("the first write dies");
    // The create's first write died: the object is new and empty, or absent. Start again
    // with a name that does not trigger the fault, then rename.
    let pid = m.daemon_pid().expect("daemon pid");
    remount_after_death(&mut m, pid);
    fs::write(m.p("b/f"), &old).expect("write");
    fs::File::open(m.p("b/f"))
        .and_then(|f| f.sync_all())
        .expect("fsync");
    fs::rename(m.p("b/f"), m.p("b/envelopefs-fault-die")).expect("rename");
    let pid = m.daemon_pid().expect("daemon pid");
    let f = fs::OpenOptions::new()
        .write(true)
        .open(m.p("b/envelopefs-fault-die"))
        .expect("open");
    f.write_all_at(&pattern(4, 9000), 1000)
        .expect_err("the daemon dies during the write");
    // An overwrite: the journal holds its new bytes, and opening the store completes it.
    let want = overwritten(&old, &pattern(4, 9000), 1000);
    drop(f);
    unmount_after_death(&mut m, pid);
    let key = m.key.display().to_string();
    let store = m.store.display().to_string();
    let out = cli(&["fsck", &store, "--read-data", "--key-file", &key]);
    assert_eq!(out.code, 1, "{}\n{}", out.stdout, out.stderr);
    let v = out.json();
    let kinds: Vec<&str> = v["problems"]
        .as_array()
        .expect("problems")
        .iter()
        .filter_map(|p| p["kind"].as_str())
        .collect();
    assert!(kinds.contains(&"interrupted-write"), "{v:#}");
    assert!(kinds.contains(&"chunk"), "the torn chunk shows too: {v:#}");
    // fsck changed nothing: it says the same again.
    let again = cli(&["fsck", &store, "--read-data", "--key-file", &key]);
    assert_eq!(again.json()["problems"], v["problems"]);
    m.mount();
    assert_bytes_eq(
        &read(&m.p("b/envelopefs-fault-die")),
        &want,
        "after the open",
    );
    assert_fsck_clean(&m, 1);
}

/// An append to an object whose size is a whole number of chunks, by the handle that wrote
/// that size: the journal copies the empty final chunk from memory instead of reading it.
/// Cut by a kill (the second change of the mount dies), the append is undone at the next
/// mount and the first write, never fsynced but complete, reads back.
#[test]
fn an_append_after_whole_chunks_is_undone_from_the_bytes_in_memory() {
    use std::os::unix::fs::FileExt;
    let mut m = TestMount::init_only(None);
    m.mount_env.push(fault_env("die-mid-write"));
    m.mount();
    fs::create_dir(m.p("b")).expect("bucket");
    let cs = m.chunk_size() as usize;
    let first = pattern(21, 4 * cs);
    let pid = m.daemon_pid().expect("daemon pid");
    let f = fs::File::create(m.p("b/envelopefs-fault-die-at-2")).expect("create");
    f.write_all_at(&first, 0).expect("the first change");
    f.write_all_at(&pattern(22, 2 * cs + 5), first.len() as u64)
        .expect_err("the second change dies");
    drop(f);
    remount_after_death(&mut m, pid);
    assert!(
        m.log().contains("interrupted by a crash was repaired"),
        "{}",
        m.log()
    );
    drop_caches();
    assert_bytes_eq(
        &read(&m.p("b/envelopefs-fault-die-at-2")),
        &first,
        "after the undo",
    );
    assert_fsck_clean(&m, 1);
}
