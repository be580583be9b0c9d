#![no_main]
// See fuzz/README.md; the entry point is incidentd::fuzzing::generic.
libfuzzer_sys::fuzz_target!(|data: &[u8]| incidentd::fuzzing::generic(data));
