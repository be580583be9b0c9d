//! Every decoder and parser of untrusted input (`incidentd::fuzzing::TARGETS`) over its corpus
//! in `fuzz/corpus/<target>/`, then over random mutations of it (flips, cuts, splices, repeated
//! chunks that grow lists), on the stable toolchain. A few seconds in `cargo test`; for a longer
//! run: `INCIDENTD_FUZZ_SECONDS=60 cargo test --release --test fuzz_smoke -- --nocapture`
//! (seconds per target). Coverage-guided fuzzing with the same targets: see fuzz/README.md.
//! A failure prints the input (base64-free: as a Rust byte string) to add to the corpus.

use std::path::Path;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn corpus(target: &str) -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let seeds: Vec<Vec<u8>> = files.iter().map(|p| std::fs::read(p).unwrap()).collect();
    assert!(!seeds.is_empty(), "no corpus for {target}");
    seeds
}

/// JSON and text fragments worth splicing in.
const TOKENS: [&[u8]; 16] = [
    b"{",
    b"}",
    b"[",
    b"]",
    b",",
    b":",
    b"\"",
    b"null",
    b"-1",
    b"1e999",
    b"\"\\u0000\"",
    b"\"..\"",
    b"\"%2e%2e\"",
    b"\xff\xfe",
    b"\n",
    b"INC-18446744073709551615",
];

fn mutate(rng: &mut StdRng, seeds: &[Vec<u8>]) -> Vec<u8> {
    let mut data = seeds[rng.gen_range(0..seeds.len())].clone();
    for _ in 0..rng.gen_range(1..=4) {
        let len = data.len();
        match rng.gen_range(0..7) {
            0 if len > 0 => {
                let at = rng.gen_range(0..len);
                data[at] ^= 1 << rng.gen_range(0..8);
            }
            1 if len > 0 => {
                let at = rng.gen_range(0..len);
                data.truncate(at);
            }
            2 => {
                let at = rng.gen_range(0..=len);
                let t = TOKENS[rng.gen_range(0..TOKENS.len())];
                data.splice(at..at, t.iter().copied());
            }
            3 if len > 1 => {
                // Repeat a chunk many times: long lists, deep nesting, long strings.
                let a = rng.gen_range(0..len);
                let b = (a + rng.gen_range(1..=64)).min(len);
                let chunk = data[a..b].to_vec();
                let times = rng.gen_range(2..=2000);
                let rep: Vec<u8> = chunk
                    .iter()
                    .copied()
                    .cycle()
                    .take(chunk.len() * times)
                    .collect();
                data.splice(b..b, rep);
            }
            4 => {
                let other = &seeds[rng.gen_range(0..seeds.len())];
                if !other.is_empty() {
                    let from = rng.gen_range(0..other.len());
                    let at = rng.gen_range(0..=len);
                    data.splice(at..at, other[from..].iter().copied());
                }
            }
            5 if len > 0 => {
                let a = rng.gen_range(0..len);
                let b = (a + rng.gen_range(1..=16)).min(len);
                data.drain(a..b);
            }
            _ => {
                let at = rng.gen_range(0..=len);
                data.insert(at, rng.gen());
            }
        }
    }
    data
}

#[test]
fn every_decoder_survives_its_corpus_and_mutations() {
    let per_target = std::env::var("INCIDENTD_FUZZ_SECONDS")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .map(Duration::from_secs_f64)
        .unwrap_or(Duration::from_millis(250));
    let seed: u64 = std::env::var("INCIDENTD_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(17);
    for (name, run) in incidentd::fuzzing::TARGETS {
        let seeds = corpus(name);
        for s in &seeds {
            run(s);
        }
        let mut rng = StdRng::seed_from_u64(seed);
        let until = Instant::now() + per_target;
        let mut n = 0u64;
        while Instant::now() < until {
            let input = mutate(&mut rng, &seeds);
            let r = std::panic::catch_unwind(|| run(&input));
            if r.is_err() {
                panic!(
                    "{name} panicked on (seed {seed}, input {n}): {:?}",
                    String::from_utf8_lossy(&input)
                );
            }
            n += 1;
        }
        eprintln!("{name}: {} corpus inputs, {n} mutations", seeds.len());
    }
}
