#![no_main]
// See fuzz/README.md; the entry point is incidentd::fuzzing::grafana.
libfuzzer_sys::fuzz_target!(|data: &[u8]| incidentd::fuzzing::grafana(data));
