//! The per-client rate limit of `POST /hooks`: a token bucket per client address, refilled at
//! `per_minute` a minute up to `per_minute` (a forge's burst of deliveries passes; a client that
//! keeps sending is answered 429 before its body is read or any MAC computed). Memory is
//! bounded: past [`MAX_CLIENTS`] addresses, idle ones (full buckets) are forgotten, and if all
//! are busy the table starts afresh (a flood from many addresses makes the limit lenient for a
//! moment, never refuses a forge it has not seen).

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// The most client addresses remembered at once.
pub const MAX_CLIENTS: usize = 4096;

#[derive(Clone, Copy, Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Token buckets by client address.
#[derive(Debug)]
pub struct RateLimit {
    per_minute: u32,
    clients: HashMap<IpAddr, Bucket>,
}

impl RateLimit {
    /// `per_minute` requests a minute per address, in bursts of up to as many; 0 turns the
    /// limit off.
    pub fn new(per_minute: u32) -> RateLimit {
        RateLimit {
            per_minute,
            clients: HashMap::new(),
        }
    }

    fn refill(&self, b: &mut Bucket, now: Instant) {
        let rate = f64::from(self.per_minute) / 60.0;
        let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
        b.tokens = (b.tokens + elapsed * rate).min(f64::from(self.per_minute));
        b.at = now;
    }

    /// Takes one request from `ip`'s bucket at `now`: `Ok` when allowed, else how long until
    /// the next one would be.
    pub fn check(&mut self, ip: IpAddr, now: Instant) -> Result<(), Duration> {
        if self.per_minute == 0 {
            return Ok(());
        }
        if !self.clients.contains_key(&ip) && self.clients.len() >= MAX_CLIENTS {
            let cap = f64::from(self.per_minute);
            let mut clients = std::mem::take(&mut self.clients);
            clients.retain(|_, b| {
                let mut b2 = *b;
                self.refill(&mut b2, now);
                b2.tokens < cap
            });
            if clients.len() >= MAX_CLIENTS {
                clients.clear();
            }
            self.clients = clients;
        }
        let full = Bucket {
            tokens: f64::from(self.per_minute),
            at: now,
        };
        let mut b = self.clients.get(&ip).copied().unwrap_or(full);
        self.refill(&mut b, now);
        let result = if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            let rate = f64::from(self.per_minute) / 60.0;
            Err(Duration::from_secs_f64(((1.0 - b.tokens) / rate).max(0.0)))
        };
        self.clients.insert(ip, b);
        result
    }

    /// Addresses remembered.
    pub fn len(&self) -> usize {
        self.clients.len()
    }

    /// True when none is remembered.
    pub fn is_empty(&self) -> bool {
        self.clients.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_passes_then_the_client_waits_and_others_do_not() {
        let mut r = RateLimit::new(6);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let t0 = Instant::now();
        for i in 0..6 {
            assert_eq!(r.check(a, t0), Ok(()), "request {i}");
        }
        let wait = r.check(a, t0).unwrap_err();
        assert!(
            wait > Duration::from_secs(9) && wait <= Duration::from_secs(10),
            "{wait:?}"
        );
        // Another address has its own bucket.
        assert_eq!(r.check(b, t0), Ok(()));
        // Ten seconds later (6 a minute) one more request from `a` passes, not two.
        let t1 = t0 + Duration::from_secs(10);
        assert_eq!(r.check(a, t1), Ok(()));
        assert!(r.check(a, t1).is_err());
    }

    #[test]
    fn zero_is_no_limit_and_memory_is_bounded() {
        let mut off = RateLimit::new(0);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let t0 = Instant::now();
        for _ in 0..1000 {
            assert_eq!(off.check(a, t0), Ok(()));
        }
        assert!(off.is_empty());

        let mut r = RateLimit::new(2);
        for i in 0..(MAX_CLIENTS as u32 + 10) {
            let ip = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            assert_eq!(r.check(ip, t0), Ok(()));
            assert!(r.len() <= MAX_CLIENTS);
        }
    }
}
