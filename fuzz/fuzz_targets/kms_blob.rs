#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| envelopefs::fuzzing::kms_blob(data));
