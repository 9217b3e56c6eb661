//! Several threads at once on one mount: writers on different files, readers and writers on
//! disjoint regions of one file, creates in one directory. Every result is checked.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use std::collections::BTreeSet;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Barrier;
use std::time::Duration;

#[test]
fn concurrent_writers_on_different_files() {
    let mut m = TestMount::new();
    fs::create_dir(m.p("b")).unwrap();
    fs::create_dir(m.p("c")).unwrap();
    let threads = 6;
    let per = 3;
    let barrier = Barrier::new(threads);
    let size = |t: usize, i: usize| 300_000 + t * 77_777 + i * 12_345;
    std::thread::scope(|s| {
        for t in 0..threads {
            let m = &m;
            let barrier = &barrier;
            s.spawn(move || {
                barrier.wait();
                for i in 0..per {
                    let bucket = if t % 2 == 0 { "b" } else { "c" };
                    let p = m.p(&format!("{bucket}/t{t}-{i}"));
                    let data = pattern((t * 100 + i) as u64, size(t, i));
                    let mut f = File::create(&p).unwrap();
                    // Odd write sizes, so writes straddle chunks.
                    let step = 1000 + t * 997 + i * 31;
                    for c in data.chunks(step) {
                        f.write_all(c)
                            .unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
                    }
                    drop(f);
                    assert_bytes_eq(
                        &read(&p),
                        &data,
                        &format!("t{t}-{i} read back by its writer"),
                    );
                }
            });
        }
    });
    let check = |m: &TestMount, when: &str| {
        std::thread::scope(|s| {
            for t in 0..threads {
                s.spawn(move || {
                    for i in 0..per {
                        let bucket = if t % 2 == 0 { "b" } else { "c" };
                        let p = m.p(&format!("{bucket}/t{t}-{i}"));
                        let want = pattern((t * 100 + i) as u64, size(t, i));
                        assert_eq!(fs::metadata(&p).unwrap().len(), want.len() as u64, "{when}");
                        assert_bytes_eq(&read(&p), &want, &format!("t{t}-{i} {when}"));
                    }
                });
            }
        });
    };
    check(&m, "read concurrently");
    m.remount();
    check(&m, "after remount");
}

/// Counts a finished thread when dropped (also when it panics).
struct Finished<'a>(&'a AtomicUsize);

impl Drop for Finished<'_> {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// Sets a flag when dropped (also when its thread panics).
struct SetOnDrop<'a>(&'a AtomicBool);

impl Drop for SetOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

#[test]
fn readers_and_writers_on_disjoint_regions_of_one_file() {
    let mut m = TestMount::new();
    fs::create_dir(m.p("b")).unwrap();
    let p = m.p("b/shared");
    let writers = 6usize;
    // Regions that do not line up with chunks: neighbours share chunks.
    let region = 50_000usize;
    let total = writers * region;
    let want = pattern(42, total);
    File::create(&p).unwrap().set_len(total as u64).unwrap();
    let shared_fd = OpenOptions::new().read(true).write(true).open(&p).unwrap();
    let done = AtomicBool::new(false);
    let reads = AtomicU64::new(0);
    let finished = AtomicUsize::new(0);
    let barrier = Barrier::new(writers + 2);
    std::thread::scope(|s| {
        for w in 0..writers {
            let (p, want, shared_fd, barrier, finished) =
                (&p, &want, &shared_fd, &barrier, &finished);
            s.spawn(move || {
                let _count = Finished(finished);
                // Half the writers use their own descriptor, half share one.
                let own;
                let f: &File = if w % 2 == 0 {
                    own = OpenOptions::new().read(true).write(true).open(p).unwrap();
                    &own
                } else {
                    shared_fd
                };
                barrier.wait();
                let start = w * region;
                let piece = 3001 + w * 211;
                let mut off = start;
                while off < start + region {
                    let end = (off + piece).min(start + region);
                    f.write_all_at(&want[off..end], off as u64)
                        .unwrap_or_else(|e| panic!("writer {w} at {off}: {e}"));
                    off = end;
                }
                // Reads back its own region at once.
                let mut back = vec![0u8; region];
                f.read_exact_at(&mut back, start as u64).unwrap();
                assert_bytes_eq(
                    &back,
                    &want[start..start + region],
                    &format!("writer {w}'s region"),
                );
            });
        }
        for r in 0..2 {
            let (p, want, done, reads, barrier) = (&p, &want, &done, &reads, &barrier);
            s.spawn(move || {
                let f = File::open(p).unwrap();
                barrier.wait();
                let mut buf = vec![0u8; 20_000];
                let mut off = r * 7919;
                while !done.load(Ordering::Relaxed) {
                    let o = off % (total - buf.len());
                    f.read_exact_at(&mut buf, o as u64)
                        .unwrap_or_else(|e| panic!("reader {r} at {o}: {e}"));
                    // Every byte is either not written yet (0) or the final value.
                    for (i, b) in buf.iter().enumerate() {
                        let w = want[o + i];
                        assert!(
                            *b == 0 || *b == w,
                            "reader {r}: byte {} is {b:#x}, neither 0 nor {w:#x}",
                            o + i
                        );
                    }
                    reads.fetch_add(1, Ordering::Relaxed);
                    off += 13_337;
                }
            });
        }
        // Stop the readers once every writer has finished (or panicked).
        s.spawn(|| {
            while finished.load(Ordering::SeqCst) < writers {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            done.store(true, Ordering::Relaxed);
        });
    });
    drop(shared_fd);
    assert!(reads.load(Ordering::Relaxed) > 0, "readers ran");
    assert_bytes_eq(&read(&p), &want, "the shared file after all writers");
    m.remount();
    assert_eq!(fs::metadata(&p).unwrap().len(), total as u64);
    assert_bytes_eq(&read(&p), &want, "the shared file after remount");
}

#[test]
fn appender_and_readers_on_one_file() {
    let m = TestMount::new();
    fs::create_dir(m.p("b")).unwrap();
    let p = m.p("b/log");
    File::create(&p).unwrap();
    let records = 400usize;
    let rec = |i: usize| format!("record {i:05} {}\n", "x".repeat(i % 50));
    let done = AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            let _done = SetOnDrop(&done);
            let mut f = OpenOptions::new().append(true).open(&p).unwrap();
            for i in 0..records {
                f.write_all(rec(i).as_bytes()).unwrap();
            }
        });
        for r in 0..3 {
            let (p, done) = (&p, &done);
            s.spawn(move || {
                let mut last = 0usize;
                loop {
                    let finished = done.load(Ordering::Relaxed);
                    let d = read(p);
                    let text = String::from_utf8(d)
                        .unwrap_or_else(|e| panic!("reader {r}: not UTF-8: {e}"));
                    // Every complete line is the right record, in order; growth only.
                    let lines: Vec<&str> = text
                        .split_inclusive('\n')
                        .filter(|l| l.ends_with('\n'))
                        .collect();
                    for (i, l) in lines.iter().enumerate() {
                        assert_eq!(*l, rec(i), "reader {r}: line {i}");
                    }
                    assert!(lines.len() >= last, "reader {r}: the file shrank");
                    last = lines.len();
                    if finished {
                        break;
                    }
                }
                assert_eq!(last, records, "reader {r} saw every record at the end");
            });
        }
    });
}

#[test]
fn concurrent_creates_renames_and_mkdirs_in_one_directory() {
    let mut m = TestMount::new();
    fs::create_dir(m.p("b")).unwrap();
    fs::create_dir(m.p("b/d")).unwrap();
    let threads = 8;
    let per = 120;
    let barrier = Barrier::new(threads);
    std::thread::scope(|s| {
        for t in 0..threads {
            let (m, barrier) = (&m, &barrier);
            s.spawn(move || {
                barrier.wait();
                for i in 0..per {
                    let name = format!("b/d/f-{t}-{i}");
                    let mut f = OpenOptions::new()
                        .write(true)
                        .create_new(true)
                        .open(m.p(&name))
                        .unwrap_or_else(|e| panic!("create {name}: {e}"));
                    f.write_all(format!("{t}:{i}").as_bytes()).unwrap();
                    drop(f);
                    match i % 4 {
                        1 => fs::rename(m.p(&name), m.p(&format!("b/d/r-{t}-{i}")))
                            .unwrap_or_else(|e| panic!("rename {name}: {e}")),
                        2 => fs::create_dir(m.p(&format!("b/d/dir-{t}-{i}")))
                            .unwrap_or_else(|e| panic!("mkdir {t}-{i}: {e}")),
                        3 => {
                            let tmp = format!("b/d/tmp-{t}-{i}");
                            fs::write(m.p(&tmp), b"tmp").unwrap();
                            fs::remove_file(m.p(&tmp))
                                .unwrap_or_else(|e| panic!("unlink {tmp}: {e}"));
                        }
                        _ => {}
                    }
                }
            });
        }
        // Meanwhile, someone keeps listing the directory.
        let m = &m;
        s.spawn(move || {
            for _ in 0..50 {
                let n = fs::read_dir(m.p("b/d")).unwrap().count();
                assert!(n <= threads * per * 2);
            }
        });
    });
    let check = |m: &TestMount, when: &str| {
        let got: BTreeSet<String> = fs::read_dir(m.p("b/d"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        let mut want = BTreeSet::new();
        for t in 0..threads {
            for i in 0..per {
                match i % 4 {
                    1 => {
                        want.insert(format!("r-{t}-{i}"));
                    }
                    2 => {
                        want.insert(format!("f-{t}-{i}"));
                        want.insert(format!("dir-{t}-{i}"));
                    }
                    _ => {
                        want.insert(format!("f-{t}-{i}"));
                    }
                }
            }
        }
        assert_eq!(got.len(), want.len(), "entries {when}");
        assert_eq!(got, want, "names {when}");
        for t in 0..threads {
            for i in 0..per {
                let name = if i % 4 == 1 {
                    format!("r-{t}-{i}")
                } else {
                    format!("f-{t}-{i}")
                };
                assert_eq!(
                    read(&m.p(&format!("b/d/{name}"))),
                    format!("{t}:{i}").as_bytes(),
                    "{name} {when}"
                );
            }
        }
    };
    check(&m, "after the threads");
    m.remount();
    check(&m, "after remount");
}

#[test]
fn concurrent_appenders_in_several_processes_do_not_lose_or_tear_lines() {
    let m = TestMount::new();
    fs::create_dir(m.p("b")).unwrap();
    // Four shells append 200 lines each to one file at the same time.
    m.sh(
        "for w in 1 2 3 4; do ( i=0; while [ $i -lt 200 ]; do echo \"writer $w line $i padding-padding-padding\" >> \"$M/b/log\"; i=$((i+1)); done ) & done; wait",
    )
    .ok();
    let text = String::from_utf8(read(&m.p("b/log"))).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 800, "every appended line is there");
    let mut seen = BTreeSet::new();
    for l in &lines {
        let parts: Vec<&str> = l.split(' ').collect();
        assert!(
            parts.len() == 5
                && parts[0] == "writer"
                && parts[2] == "line"
                && parts[4] == "padding-padding-padding",
            "torn line: {l:?}"
        );
        assert!(
            seen.insert((parts[1].to_string(), parts[3].to_string())),
            "duplicate line {l:?}"
        );
    }
    // Each writer's lines are in order.
    for w in 1..=4 {
        let nums: Vec<u32> = lines
            .iter()
            .filter(|l| l.starts_with(&format!("writer {w} ")))
            .map(|l| l.split(' ').nth(3).unwrap().parse().unwrap())
            .collect();
        assert_eq!(
            nums,
            (0..200).collect::<Vec<u32>>(),
            "writer {w}'s lines in order"
        );
    }
}

/// An open in progress holds up only its own object. The stall-open fault stops the first
/// open of one object after its backing open, holding what an open holds there; meanwhile
/// another object opens (header read and unwrap), is read, a new one is created, written and
/// read, and a rekey of the object being opened is refused (EBUSY) as of an open one. A
/// second open of the stalled object waits for the first; both read the object once it goes
/// on.
#[test]
fn an_open_in_progress_holds_up_only_its_own_object() {
    let mut m = TestMount::init_only(None);
    m.mount_env.push(fault_env("stall-open"));
    m.mount();
    fs::create_dir(m.p("b")).unwrap();
    let name = "envelopefs-fault-stall";
    let stalled_data = pattern(7, 70_000);
    let other_data = pattern(8, 50_000);
    // Created (not opened): the fault stops only an open of an existing object.
    fs::write(m.p(&format!("b/{name}")), &stalled_data).unwrap();
    fs::write(m.p("b/other"), &other_data).unwrap();
    let stalled = m.backing_path("b", &format!("{name}.stalled"));
    let go = m.backing_path("b", &format!("{name}.go"));
    let m = &m;
    std::thread::scope(|s| {
        let first = s.spawn(|| fs::read(m.p(&format!("b/{name}"))));
        poll(Duration::from_secs(30), "the open to stall", || {
            stalled.exists().then_some(())
        });
        let second = s.spawn(|| fs::read(m.p(&format!("b/{name}"))));
        let (tx, rx) = std::sync::mpsc::channel();
        s.spawn(move || {
            let r = (|| {
                let other = fs::read(m.p("b/other"))?;
                fs::write(m.p("b/new"), b"made meanwhile")?;
                let new = fs::read(m.p("b/new"))?;
                Ok::<_, std::io::Error>((other, new))
            })();
            let _ = tx.send(r);
        });
        // Only a bound for the failure (with one lock for all opens, these wait for the
        // stalled open, which waits for this test).
        let others = rx.recv_timeout(Duration::from_secs(60));
        let rekey = others.is_ok().then(|| {
            m.ctl(&format!(
                "object reencrypt --bucket-name b --name {name} --rekey"
            ))
        });
        let first_done = first.is_finished();
        fs::write(&go, b"").unwrap();
        let (other, new) = others
            .expect("other objects open while one open is in progress")
            .unwrap();
        assert_bytes_eq(&other, &other_data, "another object read during the open");
        assert_eq!(new, b"made meanwhile");
        assert!(!first_done, "the stalled open went on before it was let go");
        rekey.unwrap().err(libc::EBUSY);
        assert_bytes_eq(&first.join().unwrap().unwrap(), &stalled_data, "first open");
        assert_bytes_eq(
            &second.join().unwrap().unwrap(),
            &stalled_data,
            "second open",
        );
    });
    // The object was not rekeyed (its next open goes on at once: `go` is there).
    assert_bytes_eq(&read(&m.p(&format!("b/{name}"))), &stalled_data, "after");
    fs::remove_file(&stalled).unwrap();
    fs::remove_file(&go).unwrap();
}
