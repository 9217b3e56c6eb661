//! Chunk-size benchmark (issue 2 item 3): library-level object I/O, no FUSE.
//!
//! For each chunk size, a fresh store in a directory on the real disk (default
//! `$CARGO_TARGET_TMPDIR`, i.e. `<target>/tmp`), keyed with a raw key (no Argon2), and:
//!   1. sequential write of 256 MiB in 1 MiB `write_at`s, then fsync (MiB/s without and with it);
//!      extra: the same with 128 KiB appends (no fsync);
//!   2. sequential reads of it in 128 KiB and 1 MiB `read_at`s (page cache warm);
//!   3. 4 KiB random writes at 4 KiB-aligned offsets over a 64 MiB object (ops/s);
//!   4. 4 KiB random reads over it (ops/s);
//!   5. 5,000 small objects: create + write 4 KiB + close (files/s).
//!
//! Every measurement is repeated (`CHUNK_BENCH_REPS`, default 5); chunk sizes are interleaved
//! within each repetition (rotating the order) so a burst of outside load hits one sample
//! of every size instead of all samples of one size. Medians and min-max are printed as
//! markdown. Run it pinned: `taskset -c 1 cargo bench --bench chunk_size` (docs/CHUNK-SIZE.md).
//!
//! Knobs (environment): CHUNK_BENCH_SIZES (KiB list, default 4,8,16,64,256,1024),
//! CHUNK_BENCH_REPS (5), CHUNK_BENCH_SECS (random-op phase length, 1.0),
//! CHUNK_BENCH_SEQ_MIB (256), CHUNK_BENCH_RAND_MIB (64), CHUNK_BENCH_FILES (5000),
//! CHUNK_BENCH_PRETOUCH_MIB (768; 0 = off), CHUNK_BENCH_DIR (scratch parent directory).

use envelopefs::format::chunk::Geometry;
use envelopefs::format::records::BucketRecord;
use envelopefs::keys::crypto::{self, ChunkCipher, Key32};
use envelopefs::keys::keystore::Secret;
use envelopefs::store::object::{create_object, ObjectIo};
use envelopefs::store::{Store, StoreLock};
use std::hint::black_box;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

type BoxResult<T> = std::result::Result<T, Box<dyn std::error::Error>>;

const KIB: u64 = 1024;
const MIB: u64 = 1024 * 1024;

struct Config {
    sizes_kib: Vec<u32>,
    reps: usize,
    rand_secs: f64,
    seq_mib: u64,
    rand_mib: u64,
    files: usize,
    pretouch_mib: usize,
    dir: PathBuf,
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

impl Config {
    /// `cargo bench` passes `--bench`; `cargo test --all-targets` runs this binary without
    /// it, and then a quick smoke pass (tiny sizes, one repetition) checks that the
    /// benchmark still works without spending CI minutes on measuring.
    fn from_env() -> Self {
        let full = std::env::args().any(|a| a == "--bench");
        let mut c = Self::from_env_full();
        if !full {
            c.sizes_kib = vec![4, 16];
            c.reps = 1;
            c.rand_secs = 0.05;
            c.seq_mib = 4;
            c.rand_mib = 1;
            c.files = 50;
            c.pretouch_mib = 0;
        }
        c
    }

    fn from_env_full() -> Self {
        let sizes_kib = std::env::var("CHUNK_BENCH_SIZES")
            .ok()
            .map(|s| {
                s.split(',')
                    .filter_map(|x| x.trim().parse().ok())
                    .collect::<Vec<u32>>()
            })
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| vec![4, 8, 16, 64, 256, 1024]);
        Config {
            sizes_kib,
            reps: env_or("CHUNK_BENCH_REPS", 5usize).max(1),
            rand_secs: env_or("CHUNK_BENCH_SECS", 1.0f64),
            seq_mib: env_or("CHUNK_BENCH_SEQ_MIB", 256u64),
            rand_mib: env_or("CHUNK_BENCH_RAND_MIB", 64u64),
            files: env_or("CHUNK_BENCH_FILES", 5000usize),
            pretouch_mib: env_or("CHUNK_BENCH_PRETOUCH_MIB", 768usize),
            dir: std::env::var_os("CHUNK_BENCH_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR"))),
        }
    }
}

/// The metrics, in table order.
#[derive(Clone, Copy, PartialEq, Eq)]
enum M {
    SeqW,
    SeqWSync,
    Fsync,
    SeqW128,
    SeqR128,
    SeqR1m,
    RandW,
    RandR,
    Small,
    RawSmall,
    Seal,
    Touch,
}

const METRICS: [M; 12] = [
    M::SeqW,
    M::SeqWSync,
    M::Fsync,
    M::SeqW128,
    M::SeqR128,
    M::SeqR1m,
    M::RandW,
    M::RandR,
    M::Small,
    M::RawSmall,
    M::Seal,
    M::Touch,
];

impl M {
    fn label(self, c: &Config) -> String {
        let s = c.seq_mib;
        let r = c.rand_mib;
        match self {
            M::SeqW => format!("(1) seq write {s} MiB, 1 MiB writes, no fsync (MiB/s)"),
            M::SeqWSync => format!("(1) seq write {s} MiB, 1 MiB writes, incl. fsync (MiB/s)"),
            M::Fsync => "(1) the fsync alone (ms)".into(),
            M::SeqW128 => format!("(1+) seq write {s} MiB, 128 KiB appends, no fsync (MiB/s)"),
            M::SeqR128 => format!("(2) seq read {s} MiB warm, 128 KiB reads (MiB/s)"),
            M::SeqR1m => format!("(2) seq read {s} MiB warm, 1 MiB reads (MiB/s)"),
            M::RandW => format!("(3) rand write 4 KiB over {r} MiB (ops/s)"),
            M::RandR => format!("(4) rand read 4 KiB over {r} MiB (ops/s)"),
            M::Small => format!("(5) create + 4 KiB + close, {} files (files/s)", c.files),
            M::RawSmall => {
                "(5) control: the same on plain ext4, no envelopefs (files/s, once per repetition)"
                    .into()
            }
            M::Seal => "AES-GCM seal of one chunk, in memory (MiB/s)".into(),
            M::Touch => format!(
                "diagnostic: touching {} MiB of new memory before (1) (MiB/s; low = fresh guest memory)",
                c.pretouch_mib
            ),
        }
    }
}

struct Results {
    /// [metric][size] → samples
    v: Vec<Vec<Vec<f64>>>,
    /// allocated bytes (st_blocks * 512) of one 4 KiB small file, per size
    small_alloc: Vec<Vec<f64>>,
}

impl Results {
    fn push(&mut self, m: M, size: usize, x: f64) {
        let i = METRICS.iter().position(|&y| y == m).unwrap_or(0);
        self.v[i][size].push(x);
    }
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    if s.is_empty() {
        return f64::NAN;
    }
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

fn fmt(x: f64) -> String {
    if !x.is_finite() {
        "-".into()
    } else if x >= 100_000.0 {
        format!("{:.0}k", x / 1000.0)
    } else if x >= 10_000.0 {
        format!("{:.1}k", x / 1000.0)
    } else if x >= 100.0 {
        format!("{x:.0}")
    } else {
        format!("{x:.1}")
    }
}

/// splitmix64: deterministic offsets, the same sequence for every chunk size.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// Writes and frees memory so the next step's page cache lands on just-freed guest memory
/// instead of fresh memory the host has to fault in (perf-baseline.md, note 2).
fn pretouch(mib: usize) {
    if mib == 0 {
        return;
    }
    let mut v: Vec<u8> = Vec::with_capacity(mib << 20);
    v.resize(mib << 20, 1);
    black_box(&v);
}

/// CPU accounting to report how much else ran on the machine (and on our vCPU).
#[derive(Clone, Copy, Default)]
struct CpuSnap {
    all_busy: u64,
    all_total: u64,
    ours_busy: u64,
    ours_total: u64,
    me: u64,
}

fn parse_cpu_line(line: &str) -> (u64, u64) {
    // user nice system idle iowait irq softirq steal ...
    let f: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let get = |i: usize| f.get(i).copied().unwrap_or(0);
    let busy = get(0) + get(1) + get(2) + get(5) + get(6) + get(7);
    let total = busy + get(3) + get(4);
    (busy, total)
}

fn pinned_cpu() -> Option<usize> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let l = s.lines().find(|l| l.starts_with("Cpus_allowed_list:"))?;
    l.split(':').nth(1)?.trim().parse().ok()
}

fn cpus_allowed() -> String {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Cpus_allowed_list:"))
                .and_then(|l| l.split(':').nth(1))
                .map(|x| x.trim().to_string())
        })
        .unwrap_or_else(|| "?".into())
}

fn snap() -> CpuSnap {
    let mut s = CpuSnap::default();
    let ours = pinned_cpu().map(|c| format!("cpu{c} "));
    if let Ok(stat) = std::fs::read_to_string("/proc/stat") {
        for line in stat.lines() {
            if line.starts_with("cpu ") {
                (s.all_busy, s.all_total) = parse_cpu_line(line);
            } else if ours.as_deref().is_some_and(|p| line.starts_with(p)) {
                (s.ours_busy, s.ours_total) = parse_cpu_line(line);
            }
        }
    }
    if let Ok(me) = std::fs::read_to_string("/proc/self/stat") {
        if let Some(rest) = me.rsplit(") ").next() {
            // fields 14 (utime) and 15 (stime), counted from 1; `rest` starts at field 3
            let f: Vec<&str> = rest.split_whitespace().collect();
            let get = |i: usize| f.get(i).and_then(|x| x.parse::<u64>().ok()).unwrap_or(0);
            s.me = get(11) + get(12);
        }
    }
    s
}

/// (other load on the machine in cores, other busy fraction of our vCPU if pinned)
fn other_load(a: CpuSnap, b: CpuSnap, ncpu: f64) -> (f64, Option<f64>) {
    let me = b.me.saturating_sub(a.me) as f64;
    let total = b.all_total.saturating_sub(a.all_total) as f64;
    let busy = b.all_busy.saturating_sub(a.all_busy) as f64;
    let machine = if total > 0.0 {
        (busy - me) / (total / ncpu)
    } else {
        f64::NAN
    };
    let ours = (b.ours_total > a.ours_total).then(|| {
        (b.ours_busy.saturating_sub(a.ours_busy) as f64 - me) / (b.ours_total - a.ours_total) as f64
    });
    (machine, ours)
}

fn fs_type(dir: &Path) -> String {
    std::process::Command::new("stat")
        .args(["-f", "-c", "%T"])
        .arg(dir)
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "?".into())
}

struct Bench {
    store: Store,
    bucket: BucketRecord,
    cs: u64,
}

impl Bench {
    fn open(root: &Path, cs_kib: u32) -> BoxResult<Self> {
        let secret = Secret::KeyFile(Key32::from_bytes([0x5a; 32]));
        Store::init(root, cs_kib * 1024, &secret)?;
        let lock = StoreLock::acquire(root)?;
        let store = Store::open(root, lock, &secret)?;
        let bucket = store.create_bucket("bench", None, 0o755)?;
        Ok(Bench {
            store,
            bucket,
            cs: u64::from(cs_kib) * KIB,
        })
    }

    fn path(&self, name: &str) -> PathBuf {
        match self.store.local_dir() {
            Some(dir) => dir.bucket_dir("bench").join(name),
            None => PathBuf::from(name),
        }
    }

    fn create(&self, path: &Path) -> BoxResult<ObjectIo> {
        Ok(create_object(
            &self.store,
            &self.bucket,
            path,
            0o644,
            true,
            &mut |_| Ok(()),
        )?)
    }
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

fn write_seq(obj: &mut ObjectIo, total: u64, wsize: usize, data: &[u8]) -> BoxResult<()> {
    let mut off = 0u64;
    while off < total {
        obj.write_at(off, &data[..wsize])?;
        off += wsize as u64;
    }
    Ok(())
}

fn read_seq(obj: &ObjectIo, rsize: usize, buf: &mut [u8]) -> BoxResult<u64> {
    let mut off = 0u64;
    let mut sum = 0u64;
    loop {
        let n = obj.read_at(off, &mut buf[..rsize])?;
        if n == 0 {
            break;
        }
        sum = sum.wrapping_add(u64::from(buf[n - 1]));
        off += n as u64;
    }
    black_box(sum);
    Ok(off)
}

/// One repetition of every phase for one chunk size.
fn run_one(b: &Bench, si: usize, rep: usize, cfg: &Config, res: &mut Results) -> BoxResult<()> {
    let seq = cfg.seq_mib * MIB;
    let mut data = vec![0u8; MIB as usize];
    let mut rng = Rng(0xC0FF_EE00 + rep as u64);
    for w in data.chunks_mut(8) {
        let x = rng.next().to_le_bytes();
        w.copy_from_slice(&x[..w.len()]);
    }
    let mut rbuf = vec![0u8; MIB as usize];

    // (1) sequential write in 1 MiB writes, then fsync
    let t = Instant::now();
    pretouch(cfg.pretouch_mib);
    if cfg.pretouch_mib > 0 {
        res.push(M::Touch, si, cfg.pretouch_mib as f64 / secs(t.elapsed()));
    }
    let p = b.path("seq");
    let mut obj = b.create(&p)?;
    let t0 = Instant::now();
    write_seq(&mut obj, seq, MIB as usize, &data)?;
    let tw = secs(t0.elapsed());
    let t1 = Instant::now();
    obj.sync(false)?;
    let tf = secs(t1.elapsed());
    let mib = cfg.seq_mib as f64;
    res.push(M::SeqW, si, mib / tw);
    res.push(M::SeqWSync, si, mib / (tw + tf));
    res.push(M::Fsync, si, tf * 1000.0);

    // (2) sequential reads, page cache warm (the file was just written)
    for (m, rs) in [(M::SeqR128, 128 * KIB as usize), (M::SeqR1m, MIB as usize)] {
        let t = Instant::now();
        let n = read_seq(&obj, rs, &mut rbuf)?;
        let d = secs(t.elapsed());
        if n != seq {
            return Err(format!("read {n} bytes, wrote {seq}").into());
        }
        res.push(m, si, mib / d);
    }
    drop(obj);
    std::fs::remove_file(&p)?;

    // (1+) sequential 128 KiB appends (what cp sends without the writeback cache)
    let p = b.path("seq128");
    let mut obj = b.create(&p)?;
    let t = Instant::now();
    write_seq(&mut obj, seq, 128 * KIB as usize, &data)?;
    res.push(M::SeqW128, si, mib / secs(t.elapsed()));
    drop(obj);
    std::fs::remove_file(&p)?;

    // (3)/(4) random 4 KiB writes and reads over a warm object
    let rlen = cfg.rand_mib * MIB;
    let slots = rlen / (4 * KIB);
    let p = b.path("rand");
    let mut obj = b.create(&p)?;
    write_seq(&mut obj, rlen, MIB as usize, &data)?;
    let dur = Duration::from_secs_f64(cfg.rand_secs);
    let mut rng = Rng(0x5EED_0000 + rep as u64);
    let mut ops = 0u64;
    let t = Instant::now();
    loop {
        for _ in 0..16 {
            let off = (rng.next() % slots) * 4 * KIB;
            let at = ((ops * 4096) % MIB) as usize;
            obj.write_at(off, &data[at..at + 4096])?;
            ops += 1;
        }
        if t.elapsed() >= dur {
            break;
        }
    }
    res.push(M::RandW, si, ops as f64 / secs(t.elapsed()));
    let mut ops = 0u64;
    let mut sum = 0u64;
    let t = Instant::now();
    loop {
        for _ in 0..16 {
            let off = (rng.next() % slots) * 4 * KIB;
            let n = obj.read_at(off, &mut rbuf[..4096])?;
            if n != 4096 {
                return Err(format!("short random read {n} at {off}").into());
            }
            sum = sum.wrapping_add(u64::from(rbuf[0]));
            ops += 1;
        }
        if t.elapsed() >= dur {
            break;
        }
    }
    black_box(sum);
    res.push(M::RandR, si, ops as f64 / secs(t.elapsed()));
    drop(obj);
    std::fs::remove_file(&p)?;

    // (5) small files: create + write 4 KiB + close. The files stay until the end of the run:
    // on an ext4 without a journal (this machine's), inode allocation skips every inode freed
    // in the last 60-360 s one by one (ialloc.c recently_deleted), so deleting 5,000 files
    // makes the next 5,000 creates in that group ~50x slower.
    let dir = b.path(&format!("small{rep}"));
    std::fs::create_dir(&dir)?;
    let t = Instant::now();
    for i in 0..cfg.files {
        let mut o = b.create(&dir.join(format!("f{i:05}")))?;
        o.write_at(0, &data[..4096])?;
    }
    res.push(M::Small, si, cfg.files as f64 / secs(t.elapsed()));
    if cfg.files > 0 {
        let md = std::fs::metadata(dir.join("f00000"))?;
        res.small_alloc[si].push((md.blocks() * 512) as f64);
    }
    // Write them back now (untimed), not during the next timed phase.
    b.store.sync_all()?;

    // AES-GCM on one chunk in memory: the crypto ceiling for this chunk size
    let cipher = ChunkCipher::new(&Key32::from_bytes([0x11; 32])).expect("cipher");
    let mut chunk = vec![0u8; b.cs as usize];
    let aad = [0u8; 25];
    let nonce = [0u8; 12];
    let rounds = (64 * MIB / b.cs).max(1);
    let t = Instant::now();
    for _ in 0..rounds {
        black_box(cipher.encrypt(&nonce, &aad, &mut chunk)?);
    }
    res.push(
        M::Seal,
        si,
        (rounds * b.cs) as f64 / MIB as f64 / secs(t.elapsed()),
    );
    Ok(())
}

/// The small-file phase on plain ext4 (no envelopefs): what the disk and fs allow right now.
fn raw_small(dir: &Path, files: usize) -> BoxResult<f64> {
    use std::io::Write;
    std::fs::create_dir(dir)?;
    let data = [0x42u8; 4096];
    let t = Instant::now();
    for i in 0..files {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(dir.join(format!("f{i:05}")))?;
        f.write_all(&data)?;
    }
    let r = files as f64 / secs(t.elapsed());
    let f = std::fs::File::open(dir)?;
    f.sync_all()?;
    Ok(r)
}

/// Costs of pieces of the write path, to size what is worth fixing.
fn micro() -> BoxResult<Vec<(String, f64)>> {
    let mut out = Vec::new();
    let n = 200_000u32;
    let mut nonce = [0u8; 12];
    let t = Instant::now();
    for _ in 0..n {
        crypto::fill_random(&mut nonce)?;
        black_box(&nonce);
    }
    out.push((
        "getrandom(12 B) via crypto::fill_random (one per write_at)".into(),
        secs(t.elapsed()) * 1e9 / f64::from(n),
    ));
    let t = Instant::now();
    for _ in 0..n {
        let v = vec![0u8; 12];
        black_box(&v);
    }
    out.push((
        "vec![0u8; 12] alloc+free (nonce buffer per write_at)".into(),
        secs(t.elapsed()) * 1e9 / f64::from(n),
    ));
    let cipher = ChunkCipher::new(&Key32::from_bytes([0x11; 32])).expect("cipher");
    let mut blk = vec![0u8; 4096];
    let t = Instant::now();
    for _ in 0..n {
        black_box(cipher.encrypt(&nonce, &[0u8; 25], &mut blk)?);
    }
    out.push((
        "AES-256-GCM seal of 4 KiB".into(),
        secs(t.elapsed()) * 1e9 / f64::from(n),
    ));
    // write_batch zero-fills every chunk slot before copying the caller's data over it
    let mut big = vec![1u8; (MIB + 7 * KIB) as usize];
    let m = 2_000u32;
    let t = Instant::now();
    for _ in 0..m {
        big.fill(0);
        black_box(&mut big);
    }
    out.push((
        "memset of 1 MiB (the pt.fill(0) before each full-chunk copy, per 1 MiB write)".into(),
        secs(t.elapsed()) * 1e9 / f64::from(m),
    ));
    Ok(out)
}

fn main() -> BoxResult<()> {
    let cfg = Config::from_env();
    std::fs::create_dir_all(&cfg.dir)?;
    let tmp = tempfile::Builder::new()
        .prefix("chunk-bench-")
        .tempdir_in(&cfg.dir)?;
    let ncpu = std::thread::available_parallelism().map_or(1, |n| n.get());
    let online = std::fs::read_to_string("/sys/devices/system/cpu/online")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    let ncpu_machine = online
        .split(',')
        .map(|r| match r.split_once('-') {
            Some((a, b)) => b.parse::<usize>().unwrap_or(0) + 1 - a.parse::<usize>().unwrap_or(0),
            None => usize::from(!r.is_empty()),
        })
        .sum::<usize>()
        .max(1);
    let fstype = fs_type(tmp.path());
    eprintln!(
        "chunk_size bench: scratch {} ({fstype}), cpus allowed {} of {}, sizes {:?} KiB, {} reps",
        tmp.path().display(),
        cpus_allowed(),
        online,
        cfg.sizes_kib,
        cfg.reps
    );
    if ncpu > 1 {
        eprintln!("note: not pinned; run under `taskset -c 1` for stable numbers");
    }

    let mut benches = Vec::new();
    for &k in &cfg.sizes_kib {
        benches.push(Bench::open(&tmp.path().join(format!("cs{k}k")), k)?);
    }
    let ns = benches.len();
    let mut res = Results {
        v: vec![vec![Vec::new(); ns]; METRICS.len()],
        small_alloc: vec![Vec::new(); ns],
    };
    let start = Instant::now();
    let s0 = snap();
    let mut loads = Vec::new();
    for rep in 0..cfg.reps {
        let a = snap();
        let raw = raw_small(&tmp.path().join(format!("raw{rep}")), cfg.files)?;
        for si in 0..ns {
            res.push(M::RawSmall, si, raw);
        }
        for k in 0..ns {
            let si = (k + rep) % ns;
            let t = Instant::now();
            run_one(&benches[si], si, rep, &cfg, &mut res)?;
            eprintln!(
                "rep {}/{} chunk {:>4} KiB: {:.1} s",
                rep + 1,
                cfg.reps,
                cfg.sizes_kib[si],
                secs(t.elapsed())
            );
        }
        loads.push(other_load(a, snap(), ncpu_machine as f64));
    }
    let s1 = snap();
    let total = secs(start.elapsed());
    let micro = micro()?;
    // Clean up now, then write the inode tables back: freed inodes whose table block is
    // still dirty are avoided by ext4's allocator for 360 s instead of 60 s (see run_one).
    let t = Instant::now();
    let scratch_parent = tmp.path().parent().map(Path::to_path_buf);
    drop(benches);
    tmp.close()?;
    if let Some(p) = scratch_parent {
        let _ = std::process::Command::new("sync")
            .arg("-f")
            .arg(&p)
            .status();
    }
    eprintln!("cleanup: {:.1} s", secs(t.elapsed()));

    // ---- report (markdown on stdout)
    let head: Vec<String> = cfg
        .sizes_kib
        .iter()
        .map(|k| {
            if *k >= 1024 {
                format!("{} MiB", k / 1024)
            } else {
                format!("{k} KiB")
            }
        })
        .collect();
    println!(
        "\n### Medians of {} runs (library level, no FUSE; cells: median, then min-max)\n",
        cfg.reps
    );
    println!("| metric | {} |", head.join(" | "));
    println!("|---|{}", "---|".repeat(ns));
    for (mi, m) in METRICS.iter().enumerate() {
        let cells: Vec<String> = (0..ns)
            .map(|si| {
                let v = &res.v[mi][si];
                let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
                let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                if v.len() > 1 {
                    format!("**{}** <sub>{}-{}</sub>", fmt(median(v)), fmt(lo), fmt(hi))
                } else {
                    format!("**{}**", fmt(median(v)))
                }
            })
            .collect();
        println!("| {} | {} |", m.label(&cfg), cells.join(" | "));
    }
    // derived: microseconds per random op
    for (m, name) in [
        (M::RandW, "(3) µs per 4 KiB random write"),
        (M::RandR, "(4) µs per 4 KiB random read"),
    ] {
        let mi = METRICS.iter().position(|&y| y == m).unwrap_or(0);
        let cells: Vec<String> = (0..ns)
            .map(|si| format!("{:.1}", 1e6 / median(&res.v[mi][si])))
            .collect();
        println!("| {name} (from the median) | {} |", cells.join(" | "));
    }

    println!("\n### Storage overhead (24-byte preamble + 28 bytes per chunk, final chunk always present)\n");
    println!("| chunk size | 4 KiB file: backing bytes (overhead) | 1 MiB file: backing bytes (overhead) | 4 KiB file: allocated on disk (st_blocks) |");
    println!("|---|---|---|---|");
    for (si, k) in cfg.sizes_kib.iter().enumerate() {
        let g = Geometry::new(k * 1024);
        let b4 = g.backing_len(4096);
        let b1 = g.backing_len(MIB);
        println!(
            "| {} | {} (+{} B, {:.2} %) | {} (+{} B, {:.3} %) | {} |",
            head[si],
            b4,
            b4 - 4096,
            (b4 - 4096) as f64 * 100.0 / 4096.0,
            b1,
            b1 - MIB,
            (b1 - MIB) as f64 * 100.0 / MIB as f64,
            if res.small_alloc[si].is_empty() {
                "-".into()
            } else {
                format!("{} B", median(&res.small_alloc[si]))
            }
        );
    }

    println!("\n### Write-path pieces (ns per call, one core)\n");
    for (name, ns_) in &micro {
        println!("- {name}: {ns_:.0} ns");
    }

    let (all, ours) = other_load(s0, s1, ncpu_machine as f64);
    println!(
        "\n### Run\n\n- {:.0} s total; scratch on {} ({}); cpus allowed: {}; machine cpus online: {}",
        total,
        cfg.dir.display(),
        fstype,
        cpus_allowed(),
        online
    );
    println!(
        "- other load during the run: {:.2} cores on the machine{}",
        all,
        ours.map(|o| format!(", {:.0} % of our vCPU", o * 100.0))
            .unwrap_or_default()
    );
    let per: Vec<String> = loads
        .iter()
        .map(|(a, o)| match o {
            Some(o) => format!("{a:.2} ({:.0} %)", o * 100.0),
            None => format!("{a:.2}"),
        })
        .collect();
    println!(
        "- per repetition (cores on the machine, share of our vCPU): {}",
        per.join(" · ")
    );
    println!("\nAll samples (in run order):\n");
    for (mi, m) in METRICS.iter().enumerate() {
        let cells: Vec<String> = (0..ns)
            .map(|si| {
                res.v[mi][si]
                    .iter()
                    .map(|x| fmt(*x))
                    .collect::<Vec<_>>()
                    .join(" · ")
            })
            .collect();
        println!("- {}: {}", m.label(&cfg), cells.join(" | "));
    }
    Ok(())
}
