#![no_main]
// See fuzz/README.md; the entry point is incidentd::fuzzing::discord_interaction.
libfuzzer_sys::fuzz_target!(|data: &[u8]| incidentd::fuzzing::discord_interaction(data));
