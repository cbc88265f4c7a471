//! The allowance of password checks per client address: a burst of
//! [`BURST`], then one every [`REFILL`], through `governor`'s keyed GCRA
//! limiter. A credential already verified (see [`super::verified`]) costs
//! nothing, so the allowance is spent by wrong passwords (never
//! remembered) and by the first check of each right one; past it, the
//! client gets 429 with `Retry-After` and no bcrypt runs for it.

use std::{net::IpAddr, num::NonZeroU32, time::Duration};

use governor::{
    DefaultKeyedRateLimiter, Quota, RateLimiter,
    clock::{Clock, DefaultClock},
};

/// Password checks a client address may make at once.
pub const BURST: u32 = 10;
/// Time after which one more check is allowed.
pub const REFILL: Duration = Duration::from_secs(6);

/// Password checks allowed per client address.
pub struct LoginLimiter {
    limiter: DefaultKeyedRateLimiter<IpAddr>,
    clock: DefaultClock,
}

impl Default for LoginLimiter {
    fn default() -> Self {
        Self::new(BURST, REFILL)
    }
}

impl LoginLimiter {
    /// A limiter allowing `burst` checks at once, then one per `refill`.
    pub fn new(burst: u32, refill: Duration) -> Self {
        let burst = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
        let quota = Quota::with_period(refill)
            .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
            .allow_burst(burst);
        Self {
            limiter: RateLimiter::keyed(quota),
            clock: DefaultClock::default(),
        }
    }

    /// Take one check from `client`'s allowance: `Err(seconds)` to wait
    /// (at least 1) when it is spent.
    pub fn check(&self, client: IpAddr) -> Result<(), u64> {
        self.limiter.check_key(&client).map_err(|not_until| {
            let wait = not_until.wait_time_from(self.clock.now());
            (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1)
        })
    }

    /// Forget the addresses whose allowance is whole again.
    pub fn forget_idle(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_passes_then_the_address_waits_and_others_do_not() {
        let limiter = LoginLimiter::new(3, Duration::from_secs(60));
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        for _ in 0..3 {
            assert_eq!(limiter.check(a), Ok(()));
        }
        let wait = limiter.check(a).unwrap_err();
        assert!((1..=60).contains(&wait), "{wait}");
        assert_eq!(limiter.check(b), Ok(()));
    }
}
