//! Replays the kept fuzz corpora (fuzz/corpus/TARGET and the seeds in fuzz/seeds/TARGET)
//! through the fuzz targets' bodies (src/fuzzing.rs) under plain `cargo test`: every input
//! libFuzzer ever kept still parses without a panic and keeps the round-trip properties.
//! A crash found by scripts/fuzz.sh is kept in fuzz/seeds/TARGET as a regression input.

use std::fs;
use std::path::Path;

type Target = fn(&[u8]);

const TARGETS: [(&str, Target); 8] = [
    ("header", envelopefs::fuzzing::header),
    ("bucket_record", envelopefs::fuzzing::bucket_record),
    ("keystore", envelopefs::fuzzing::keystore),
    ("config", envelopefs::fuzzing::config),
    ("ctl", envelopefs::fuzzing::ctl),
    ("headers_backup", envelopefs::fuzzing::headers_backup),
    ("kms_blob", envelopefs::fuzzing::kms_blob),
    ("journal", envelopefs::fuzzing::journal),
];

fn replay(dir: &Path, f: Target) -> usize {
    let Ok(it) = fs::read_dir(dir) else {
        return 0;
    };
    let mut n = 0;
    for e in it {
        let p = e.expect("corpus entry").path();
        let bytes = fs::read(&p).unwrap_or_else(|e| panic!("reading {}: {e}", p.display()));
        let r = std::panic::catch_unwind(|| f(&bytes));
        assert!(r.is_ok(), "{} makes the target panic", p.display());
        n += 1;
    }
    n
}

#[test]
fn every_kept_fuzz_input_replays_without_a_crash() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    for (name, f) in TARGETS {
        let seeds = replay(&root.join("seeds").join(name), f);
        let corpus = replay(&root.join("corpus").join(name), f);
        assert!(seeds > 0, "fuzz/seeds/{name} is empty");
        assert!(
            corpus > 0,
            "fuzz/corpus/{name} is empty: run scripts/fuzz.sh run {name} and commit the corpus"
        );
        eprintln!("{name}: {seeds} seeds, {corpus} corpus inputs replayed");
    }
}
