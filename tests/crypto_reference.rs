//! The AEAD (aws-lc-rs) against an independent implementation (RustCrypto's aes-gcm): the
//! same key, nonce, AAD and plaintext give the same bytes, and each opens what the other
//! sealed. The golden vectors in tests/format_vectors.rs pin the format; this pins the
//! primitive on many random inputs, including the lengths chunks use.

use aes_gcm::aead::array::Array;
use aes_gcm::aead::{AeadInOut, KeyInit};
use aes_gcm::Aes256Gcm;
use envelopefs::keys::crypto::{self, ChunkCipher, Key32};
use proptest::prelude::*;

fn reference_seal(key: &[u8; 32], nonce: &[u8; 12], aad: &[u8], plain: &[u8]) -> Vec<u8> {
    let c = Aes256Gcm::new(&aes_gcm::Key::<Aes256Gcm>::from(*key));
    let mut buf = plain.to_vec();
    let tag = c
        .encrypt_inout_detached(&Array::from(*nonce), aad, buf.as_mut_slice().into())
        .expect("reference seal");
    buf.extend_from_slice(&tag);
    buf
}

fn lengths() -> impl Strategy<Value = usize> {
    prop_oneof![
        0usize..64,
        Just(4096),
        Just(4095),
        Just(4097),
        0usize..20_000
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn seal_matches_reference(
        key in any::<[u8; 32]>(),
        nonce in any::<[u8; 12]>(),
        aad in proptest::collection::vec(any::<u8>(), 0..80),
        len in lengths(),
        fill in any::<u8>(),
    ) {
        let plain: Vec<u8> = (0..len).map(|i| (i as u8).wrapping_mul(31) ^ fill).collect();
        let k = Key32::from_bytes(key);
        let ours = crypto::seal(&k, &nonce, &aad, &plain).expect("seal");
        let theirs = reference_seal(&key, &nonce, &aad, &plain);
        prop_assert_eq!(&ours, &theirs);

        // The chunk path: encrypt in place with a separate tag, decrypt back.
        let cc = ChunkCipher::new(&k).expect("cipher");
        let mut buf = plain.clone();
        let tag = cc.encrypt(&nonce, &aad, &mut buf).expect("encrypt");
        prop_assert_eq!(&buf[..], &theirs[..len]);
        prop_assert_eq!(&tag[..], &theirs[len..]);
        prop_assert!(cc.decrypt(&nonce, &aad, &mut buf, &tag));
        prop_assert_eq!(&buf, &plain);

        // Opens what the reference sealed; refuses it with one bit changed anywhere.
        let opened = crypto::open(&k, &nonce, &aad, &theirs).expect("open reference output");
        prop_assert_eq!(&opened[..], &plain[..]);
        let mut bad = theirs.clone();
        let bit = (fill as usize * 7919) % (bad.len() * 8);
        bad[bit / 8] ^= 1 << (bit % 8);
        prop_assert!(crypto::open(&k, &nonce, &aad, &bad).is_none());
        let mut wrong_aad = aad.clone();
        wrong_aad.push(0);
        prop_assert!(crypto::open(&k, &nonce, &wrong_aad, &theirs).is_none());
    }
}
