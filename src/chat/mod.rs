//! Chat surfaces. The neutral message model lives in `domain::card` and `ports`; each folder
//! here turns it into one platform's messages. `recording` is a faithful in-memory port for
//! tests and benchmarks (it can fail and rate-limit on demand).

pub mod console;
pub mod recording;
