#![no_main]
// See fuzz/README.md; the entry point is incidentd::fuzzing::slash_command.
libfuzzer_sys::fuzz_target!(|data: &[u8]| incidentd::fuzzing::slash_command(data));
