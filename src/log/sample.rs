//! Sampling of successful requests. Errors are always kept.

/// Decides per request whether to log it: errors always, successes with
/// probability `rate`. One per shard (no sharing, no atomics).
#[derive(Clone, Debug)]
pub struct Sampler {
    /// Probability of keeping a successful request, in `[0, 1]`.
    pub rate: f64,
    /// xorshift64* state; never 0.
    pub state: u64,
}

impl Sampler {
    /// A sampler keeping successes with probability `rate` (clamped to
    /// `[0, 1]`; NaN counts as 1). `seed` may be anything (0 included).
    pub fn new(rate: f64, seed: u64) -> Self {
        let rate = if rate.is_nan() {
            1.0
        } else {
            rate.clamp(0.0, 1.0)
        };
        Sampler {
            rate,
            state: splitmix64(seed) | 1,
        }
    }

    /// True when this request should be logged. `is_error` (see
    /// [`AccessRecord::is_error`](super::AccessRecord::is_error)) always
    /// keeps it; rate 1.0 keeps all, 0.0 keeps only errors.
    #[inline]
    pub fn keep(&mut self, is_error: bool) -> bool {
        if is_error || self.rate >= 1.0 {
            return true;
        }
        if self.rate <= 0.0 {
            return false;
        }
        // xorshift64* (Vigna); the top 53 bits as a uniform f64 in [0, 1).
        let mut x = self.state;
        if x == 0 {
            x = 0x9E37_79B9_7F4A_7C15;
        }
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.state = x;
        let r = x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11;
        (r as f64) * (1.0 / (1u64 << 53) as f64) < self.rate
    }
}

/// SplitMix64 finalizer: spreads any seed over all 64 bits.
pub(crate) fn splitmix64(seed: u64) -> u64 {
    let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A seed that differs per process and per call: the clock, the pid and
/// std's randomly keyed hasher.
pub fn entropy_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(now);
    h.write_u32(std::process::id());
    h.finish()
}

/// Parses a sample rate: a number in `[0, 1]`. `None` or an empty/blank
/// string gives `default`.
pub fn parse_sample_rate(value: Option<&str>, default: f64) -> Result<f64, String> {
    let Some(v) = value.map(str::trim).filter(|v| !v.is_empty()) else {
        return Ok(default);
    };
    match v.parse::<f64>() {
        Ok(r) if (0.0..=1.0).contains(&r) => Ok(r),
        Ok(r) => Err(format!("LOG_SAMPLE_RATE must be between 0 and 1, got {r}")),
        Err(_) => Err(format!(
            "LOG_SAMPLE_RATE must be a number between 0 and 1, got {v:?}"
        )),
    }
}

/// Reads `LOG_SAMPLE_RATE` (a number in `[0, 1]`); unset or empty gives
/// `default`.
pub fn sample_rate_from_env(default: f64) -> Result<f64, String> {
    match std::env::var("LOG_SAMPLE_RATE") {
        Ok(v) => parse_sample_rate(Some(&v), default),
        Err(std::env::VarError::NotPresent) => Ok(default),
        Err(std::env::VarError::NotUnicode(_)) => {
            Err("LOG_SAMPLE_RATE is not valid UTF-8".to_string())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_one_keeps_all_zero_keeps_errors_only() {
        let mut all = Sampler::new(1.0, 1);
        let mut none = Sampler::new(0.0, 1);
        for _ in 0..10_000 {
            assert!(all.keep(false));
            assert!(!none.keep(false));
            assert!(none.keep(true));
        }
    }

    #[test]
    fn rate_is_respected() {
        for rate in [0.01, 0.1, 0.5, 0.9] {
            let mut s = Sampler::new(rate, 7);
            let n = 200_000;
            let kept = (0..n).filter(|_| s.keep(false)).count();
            let got = kept as f64 / n as f64;
            assert!((got - rate).abs() < 0.01, "rate {rate}: kept {got}");
        }
        let mut s = Sampler::new(0.1, 3);
        assert!((0..1000).all(|_| s.keep(true)));
    }

    #[test]
    fn seeds_zero_and_nan() {
        let mut s = Sampler::new(0.5, 0);
        assert_ne!(s.state, 0);
        let kept = (0..10_000).filter(|_| s.keep(false)).count();
        assert!(kept > 4000 && kept < 6000);
        assert_eq!(Sampler::new(f64::NAN, 0).rate, 1.0);
        assert_eq!(Sampler::new(7.0, 0).rate, 1.0);
        assert_eq!(Sampler::new(-1.0, 0).rate, 0.0);
    }

    #[test]
    fn parse() {
        assert_eq!(parse_sample_rate(None, 0.3), Ok(0.3));
        assert_eq!(parse_sample_rate(Some(""), 0.3), Ok(0.3));
        assert_eq!(parse_sample_rate(Some(" 0.25 "), 1.0), Ok(0.25));
        assert_eq!(parse_sample_rate(Some("1"), 0.0), Ok(1.0));
        assert_eq!(parse_sample_rate(Some("0"), 1.0), Ok(0.0));
        assert!(parse_sample_rate(Some("1.5"), 1.0).is_err());
        assert!(parse_sample_rate(Some("-0.1"), 1.0).is_err());
        assert!(parse_sample_rate(Some("NaN"), 1.0).is_err());
        assert!(parse_sample_rate(Some("half"), 1.0).is_err());
    }

    #[test]
    fn from_env_unset_gives_default() {
        // Only reads; no test in this crate sets LOG_SAMPLE_RATE.
        if std::env::var_os("LOG_SAMPLE_RATE").is_none() {
            assert_eq!(sample_rate_from_env(0.5), Ok(0.5));
        }
    }
}
