#![no_main]
// See fuzz/README.md; the entry point is incidentd::fuzzing::slack_payload.
libfuzzer_sys::fuzz_target!(|data: &[u8]| incidentd::fuzzing::slack_payload(data));
