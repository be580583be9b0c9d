#![no_main]
// See fuzz/README.md; the entry point is incidentd::fuzzing::chat_message.
libfuzzer_sys::fuzz_target!(|data: &[u8]| incidentd::fuzzing::chat_message(data));
