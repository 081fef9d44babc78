//! The `grpc-timeout` request header: how long the caller is willing to wait.
//!
//! Format (gRPC over HTTP/2 spec): up to 8 ASCII digits followed by a unit, one of
//! `H` hours, `M` minutes, `S` seconds, `m` milliseconds, `u` microseconds, `n` nanoseconds.

use std::time::Duration;

use http::{HeaderMap, HeaderValue};

/// The header name.
pub const GRPC_TIMEOUT: &str = "grpc-timeout";

/// Largest value the header can carry per unit.
const MAX_DIGITS_VALUE: u64 = 99_999_999;

/// The caller's timeout, if the request carries a well-formed `grpc-timeout`.
pub fn grpc_timeout(headers: &HeaderMap) -> Option<Duration> {
    parse(headers.get(GRPC_TIMEOUT)?.to_str().ok()?)
}

/// Writes `timeout` as the request's `grpc-timeout`, replacing any previous value.
pub fn set_grpc_timeout(headers: &mut HeaderMap, timeout: Duration) {
    if let Ok(value) = HeaderValue::from_str(&encode(timeout)) {
        headers.insert(GRPC_TIMEOUT, value);
    }
}

/// Parses a `grpc-timeout` value.
pub fn parse(value: &str) -> Option<Duration> {
    if value.len() < 2 || value.len() > 9 {
        return None;
    }
    let (digits, unit) = value.split_at(value.len() - 1);
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// Encodes `timeout` in the finest unit that fits in 8 digits.
pub fn encode(timeout: Duration) -> String {
    let nanos = timeout.as_nanos();
    let units: [(u128, char); 6] = [
        (1, 'n'),
        (1_000, 'u'),
        (1_000_000, 'm'),
        (1_000_000_000, 'S'),
        (60_000_000_000, 'M'),
        (3_600_000_000_000, 'H'),
    ];
    for (scale, unit) in units {
        // Round up so the encoded deadline is never shorter than asked (except past the max).
        let value = nanos.div_ceil(scale);
        if value <= u128::from(MAX_DIGITS_VALUE) {
            return format!("{value}{unit}");
        }
    }
    format!("{MAX_DIGITS_VALUE}H")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_unit() {
        assert_eq!(parse("2H"), Some(Duration::from_secs(7200)));
        assert_eq!(parse("3M"), Some(Duration::from_secs(180)));
        assert_eq!(parse("5S"), Some(Duration::from_secs(5)));
        assert_eq!(parse("250m"), Some(Duration::from_millis(250)));
        assert_eq!(parse("7u"), Some(Duration::from_micros(7)));
        assert_eq!(parse("99999999n"), Some(Duration::from_nanos(99_999_999)));
    }

    #[test]
    fn rejects_malformed_values() {
        for bad in ["", "S", "5", "5s", "-5S", "123456789S", "1.5S", "5 S"] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn encode_round_trips_without_shortening() {
        for d in [
            Duration::from_nanos(1),
            Duration::from_millis(1500),
            Duration::from_secs(30),
            Duration::from_secs(86_400),
            Duration::new(1, 1),
        ] {
            let back = parse(&encode(d)).unwrap();
            assert!(
                back >= d,
                "{d:?} encoded as {} parsed back as {back:?}",
                encode(d)
            );
        }
    }
}
