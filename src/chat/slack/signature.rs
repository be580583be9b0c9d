//! Slack request signing (v0): `X-Slack-Signature: v0=hex(HMAC-SHA256(secret,
//! "v0:{timestamp}:{raw body}"))`, with a 5-minute replay window and a constant-time compare.
//! HMAC is written out over `sha2` (already a dependency) rather than pulling in another crate.

use sha2::{Digest, Sha256};

/// Requests whose timestamp is further than this from now are replays (Slack's advice).
pub const MAX_SKEW_SECONDS: i64 = 5 * 60;

/// Why a request was refused (never shown to the caller beyond "401").
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("missing X-Slack-Signature or X-Slack-Request-Timestamp")]
    Missing,
    #[error("timestamp is not a number")]
    BadTimestamp,
    #[error("timestamp is more than 5 minutes away from now")]
    Stale,
    #[error("signature does not match")]
    Mismatch,
}

/// HMAC-SHA256 (RFC 2104).
pub fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    const BLOCK: usize = 64;
    let mut k = [0u8; BLOCK];
    if key.len() > BLOCK {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let mut inner = Sha256::new();
    inner.update(k.map(|b| b ^ 0x36));
    inner.update(message);
    let mut outer = Sha256::new();
    outer.update(k.map(|b| b ^ 0x5c));
    outer.update(inner.finalize());
    outer.finalize().into()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The `X-Slack-Signature` value for a body (also what the test fake signs with).
pub fn sign(secret: &str, timestamp: &str, body: &[u8]) -> String {
    let mut base = format!("v0:{timestamp}:").into_bytes();
    base.extend_from_slice(body);
    format!("v0={}", hex(&hmac_sha256(secret.as_bytes(), &base)))
}

/// Constant-time comparison, so a signature cannot be guessed byte by byte from timings.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Checks a request; `now` is Unix seconds.
pub fn verify(
    secret: &str,
    timestamp: Option<&str>,
    signature: Option<&str>,
    body: &[u8],
    now: i64,
) -> Result<(), SignatureError> {
    let (Some(ts), Some(sig)) = (timestamp, signature) else {
        return Err(SignatureError::Missing);
    };
    let t: i64 = ts
        .trim()
        .parse()
        .map_err(|_| SignatureError::BadTimestamp)?;
    if (now - t).abs() > MAX_SKEW_SECONDS {
        return Err(SignatureError::Stale);
    }
    if same(
        sign(secret, ts.trim(), body).as_bytes(),
        sig.trim().as_bytes(),
    ) {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";
    const TS: &str = "1531420618";
    const BODY: &str = "token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
    const SIG: &str = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503";

    #[test]
    fn slacks_documented_example_verifies() {
        assert_eq!(sign(SECRET, TS, BODY.as_bytes()), SIG);
        let now = 1531420618 + 10;
        assert_eq!(
            verify(SECRET, Some(TS), Some(SIG), BODY.as_bytes(), now),
            Ok(())
        );
    }

    #[test]
    fn forged_stale_and_missing_are_refused() {
        let now = 1531420618;
        let b = BODY.as_bytes();
        assert_eq!(
            verify("other-secret", Some(TS), Some(SIG), b, now),
            Err(SignatureError::Mismatch)
        );
        let mut tampered = BODY.to_string();
        tampered.push('x');
        assert_eq!(
            verify(SECRET, Some(TS), Some(SIG), tampered.as_bytes(), now),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(SECRET, Some(TS), Some(SIG), b, now + 301),
            Err(SignatureError::Stale)
        );
        assert_eq!(
            verify(SECRET, Some(TS), Some(SIG), b, now - 301),
            Err(SignatureError::Stale)
        );
        assert_eq!(
            verify(SECRET, None, Some(SIG), b, now),
            Err(SignatureError::Missing)
        );
        assert_eq!(
            verify(SECRET, Some("soon"), Some(SIG), b, now),
            Err(SignatureError::BadTimestamp)
        );
        assert_eq!(
            verify(SECRET, Some(TS), Some("v0=00"), b, now),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn long_keys_are_hashed_first() {
        // RFC 4231 test case 6: a 131-byte key.
        let key = [0xaau8; 131];
        let mac = hmac_sha256(
            &key,
            b"Test Using Larger Than Block-Size Key - Hash Key First",
        );
        assert_eq!(
            hex(&mac),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
    }
}
