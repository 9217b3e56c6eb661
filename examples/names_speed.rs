//! Speed of encrypted names (docs/DECISIONS.md "Encrypted names"): encrypt + decrypt of one
//! entry name, 20 and 255 bytes, with the AES-SIV name cipher. Not a test (timings never
//! are); run it on an idle machine:
//! `taskset -c 1 cargo run --release --example names_speed` (or without --release: the
//! dependencies that do the work are built at opt-level 3 in the dev profile too).

use envelopefs::format::names::{NameCipher, StoredName};
use std::hint::black_box;
use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let cipher = NameCipher::new(&[0x42; 32])?;
    let dir = [7u8; 16];
    let rounds: u32 = std::env::var("NAMES_SPEED_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    for len in [20usize, 160, 255] {
        let name: Vec<u8> = (0..len).map(|i| b'a' + (i % 26) as u8).collect();
        let mut best = f64::MAX;
        for _ in 0..5 {
            let t = Instant::now();
            for _ in 0..rounds {
                let stored = cipher.encrypt_name(black_box(&dir), black_box(&name))?;
                let back = match &stored {
                    StoredName::Short(s) => cipher.decrypt_short_name(&dir, s.as_bytes())?,
                    StoredName::Long { entry, full, .. } => {
                        cipher.decrypt_long_name(&dir, entry.as_bytes(), full)?
                    }
                };
                black_box(back);
            }
            best = best.min(t.elapsed().as_secs_f64() * 1e9 / f64::from(rounds));
        }
        let mut enc = f64::MAX;
        for _ in 0..5 {
            let t = Instant::now();
            for _ in 0..rounds {
                black_box(cipher.encrypt_name(black_box(&dir), black_box(&name))?);
            }
            enc = enc.min(t.elapsed().as_secs_f64() * 1e9 / f64::from(rounds));
        }
        // For scale: AES-256-GCM (aws-lc-rs, as for chunks) seal + open of the same bytes.
        let key = envelopefs::keys::crypto::Key32::from_bytes([0x42; 32]);
        let mut gcm = f64::MAX;
        for _ in 0..5 {
            let t = Instant::now();
            for _ in 0..rounds {
                let s = envelopefs::keys::crypto::seal(&key, &[1; 12], &dir, black_box(&name))?;
                black_box(envelopefs::keys::crypto::open(&key, &[1; 12], &dir, &s));
            }
            gcm = gcm.min(t.elapsed().as_secs_f64() * 1e9 / f64::from(rounds));
        }
        println!(
            "{len:3}-byte name: encrypt + decrypt {best:6.0} ns, encrypt alone {enc:6.0} ns; AES-256-GCM seal + open {gcm:5.0} ns (best of 5 x {rounds})"
        );
    }
    Ok(())
}
