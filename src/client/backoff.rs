//! Reconnection delays: exponential back-off with jitter and a cap, and an optional attempt limit.

use std::time::Duration;

/// How a [`ReconnectingClient`](super::ReconnectingClient) waits between attempts.
///
/// The delay before attempt `n + 1` after `n` failures in a row is `initial * multiplier^(n-1)`,
/// capped at `max`, then spread by up to `±jitter` (a fraction) so that many clients do not retry in
/// step. A successful connection resets the count.
///
/// ```
/// use std::time::Duration;
/// let b = aio::client::Backoff::new(Duration::from_millis(100), Duration::from_secs(2)).jitter(0.0);
/// assert_eq!(b.delay(1), Duration::from_millis(100));
/// assert_eq!(b.delay(3), Duration::from_millis(400));
/// assert_eq!(b.delay(10), Duration::from_secs(2));
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    multiplier: f64,
    jitter: f64,
    max_attempts: Option<u32>,
}

impl Default for Backoff {
    /// 100 ms doubling up to 5 s, ±20 % jitter, never giving up.
    fn default() -> Self {
        Backoff::new(Duration::from_millis(100), Duration::from_secs(5))
    }
}

impl Backoff {
    /// Starts at `initial`, doubles, never exceeds `max`; ±20 % jitter; never gives up.
    pub fn new(initial: Duration, max: Duration) -> Backoff {
        Backoff {
            initial,
            max: max.max(initial),
            multiplier: 2.0,
            jitter: 0.2,
            max_attempts: None,
        }
    }

    /// Sets the growth factor (at least 1).
    #[must_use = "the back-off is a new value: keep it"]
    pub fn multiplier(mut self, factor: f64) -> Backoff {
        self.multiplier = if factor.is_finite() {
            factor.max(1.0)
        } else {
            2.0
        };
        self
    }

    /// Sets the jitter fraction (0 to 1).
    #[must_use = "the back-off is a new value: keep it"]
    pub fn jitter(mut self, fraction: f64) -> Backoff {
        self.jitter = if fraction.is_finite() {
            fraction.clamp(0.0, 1.0)
        } else {
            0.0
        };
        self
    }

    /// Gives up after `attempts` failed attempts in a row (`None`: never).
    #[must_use = "the back-off is a new value: keep it"]
    pub fn give_up_after(mut self, attempts: Option<u32>) -> Backoff {
        self.max_attempts = attempts;
        self
    }

    /// The attempt limit, if any.
    pub fn max_attempts(&self) -> Option<u32> {
        self.max_attempts
    }

    /// The upper bound of any delay, jitter included.
    pub fn bound(&self) -> Duration {
        self.max.mul_f64(1.0 + self.jitter)
    }

    /// The delay after `failures` failures in a row (1 for the first), jitter included.
    pub fn delay(&self, failures: u32) -> Duration {
        let exp = failures.saturating_sub(1).min(64) as i32;
        let base = self.initial.as_secs_f64() * self.multiplier.powi(exp);
        let base = base.min(self.max.as_secs_f64());
        let spread = if self.jitter > 0.0 {
            1.0 + self.jitter * (2.0 * fastrand::f64() - 1.0)
        } else {
            1.0
        };
        Duration::from_secs_f64((base * spread).max(0.0))
    }
}
