//! Abuse limits, sans IO: per-client-address counters (open connections, open event streams)
//! and fixed one-window rates (WebSocket upgrades, HTTP requests, session registrations) in a
//! table of bounded size, and the per-connection token bucket for inbound messages. It never
//! reads a clock (`now_ms` is an argument, milliseconds from any fixed origin), never locks and
//! never logs: the accept module and the connection task do those.
//!
//! **Memory.** A hostile peer rotating addresses (an IPv6 /48 holds 65,536 /64s) must not grow
//! the table without bound. Addresses are counted by [`address_key`] (IPv6 by its /64) and the
//! table holds at most [`MAX_ADDRESSES`] of them: 16 bytes of key and 32 of [`Entry`] per
//! entry, so about 6.3 MiB per table at the cap (hashbrown's 131,072 buckets of 49 bytes), one
//! table per listening port. An entry goes when it holds nothing open and its window is over:
//! at once when its last connection closes after the window, else at the next prune, which runs
//! when a new address finds the table full (at most once a second, so a flood of new
//! addresses cannot make every accept scan the table).
//!
//! **At the cap** a new address is refused ([`Refused::Full`], 503) while tracked addresses
//! carry on: failing open would let anyone who fills the table (cheap with IPv6) flood from
//! one more address unchecked, while failing closed costs only new addresses, and only while
//! the table holds 100,000 addresses that were active within the last window: past per-address
//! limits already, a distributed attack that needs protection upstream. The table empties by
//! itself one window after the attack stops.

use std::collections::HashMap;
use std::net::IpAddr;

use crate::sessions::address_key;

/// Most addresses one table tracks (see the module's doc for the byte budget).
pub(crate) const MAX_ADDRESSES: usize = 100_000;
/// A full table is scanned for expired entries at most this often.
const PRUNE_EVERY_MS: u64 = 1000;

/// The per-address limits of one port; 0 is no limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Settings {
    /// Open connections per address (`max_connections_per_ip`).
    pub(crate) max_connections: u32,
    /// WebSocket upgrades per address per window (`upgrades_per_ip_per_minute`).
    pub(crate) upgrades: u32,
    /// Plain HTTP requests per address per window (`http_requests_per_minute`).
    pub(crate) requests: u32,
    /// Session-API registrations per address per window (`sessions.registrations_per_minute`).
    pub(crate) registrations: u32,
    /// Open session-API event streams per address (`sessions.max_streams_per_address`).
    pub(crate) max_streams: u32,
    /// The rate window in milliseconds: a minute, shorter in tests.
    pub(crate) window_ms: u64,
}

impl Settings {
    /// The per-address limits `config` asks for, with the rate window `window_ms`.
    pub(crate) fn from_config(config: &crate::config::Config, window_ms: u64) -> Self {
        Self {
            max_connections: config.max_connections_per_ip,
            upgrades: config.upgrades_per_ip_per_minute,
            requests: config.http_requests_per_minute,
            registrations: config.sessions.registrations_per_minute,
            max_streams: config.sessions.max_streams_per_address,
            window_ms,
        }
    }

    /// No limit at all (a table that never refuses and stays empty).
    pub(crate) fn is_off(&self) -> bool {
        self.max_connections == 0
            && self.upgrades == 0
            && self.requests == 0
            && self.registrations == 0
            && self.max_streams == 0
    }
}

/// What is counted against a window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rate {
    Upgrade,
    Request,
    Registration,
}

impl Rate {
    /// The key that sets it, for log lines.
    pub(crate) fn key(self) -> &'static str {
        match self {
            Self::Upgrade => "upgrades_per_ip_per_minute",
            Self::Request => "http_requests_per_minute",
            Self::Registration => "sessions.registrations_per_minute",
        }
    }
}

/// Why an address was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// `max_connections_per_ip` connections are open from it.
    Connections { limit: u32 },
    /// `max_streams_per_address` event streams are open from it.
    Streams { limit: u32 },
    /// Its window's share of this rate is used up; the window ends in `retry_after_s` seconds.
    Rate {
        rate: Rate,
        limit: u32,
        retry_after_s: u64,
    },
    /// A new address while the table is full of live ones.
    Full,
}

/// One address's counters. 32 bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Entry {
    /// When the current window began.
    window_start_ms: u64,
    open: u32,
    streams: u32,
    upgrades: u32,
    requests: u32,
    registrations: u32,
    /// Refusals in the current window (for the log's budget).
    refused: u32,
}

impl Entry {
    fn holds_nothing(&self) -> bool {
        self.open == 0 && self.streams == 0
    }

    /// Starts a new window if the current one is over.
    fn roll(&mut self, now_ms: u64, window_ms: u64) {
        if now_ms.saturating_sub(self.window_start_ms) >= window_ms {
            *self = Self {
                window_start_ms: now_ms,
                open: self.open,
                streams: self.streams,
                ..Self::default()
            };
        }
    }

    fn expired(&self, now_ms: u64, window_ms: u64) -> bool {
        self.holds_nothing() && now_ms.saturating_sub(self.window_start_ms) >= window_ms
    }
}

/// The per-address table of one port.
#[derive(Debug)]
pub(crate) struct Table {
    settings: Settings,
    entries: HashMap<u128, Entry>,
    capacity: usize,
    last_prune_ms: Option<u64>,
}

/// What a refusal should be logged as: a warning for the 1st, 2nd, 4th, 8th … refusal of an
/// address in one window, with the count so far; otherwise at debug level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Verdict {
    pub(crate) refused: Refused,
    /// `Some(n)`: warn, this being the address's n-th refusal this window.
    pub(crate) warn: Option<u32>,
}

impl Table {
    pub(crate) fn new(settings: Settings) -> Self {
        Self::with_capacity(settings, MAX_ADDRESSES)
    }

    /// A table holding at most `capacity` addresses (small in tests).
    pub(crate) fn with_capacity(settings: Settings, capacity: usize) -> Self {
        Self {
            settings,
            entries: HashMap::new(),
            capacity,
            last_prune_ms: None,
        }
    }

    /// Addresses tracked now.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Open connections counted for `ip`.
    #[cfg(test)]
    pub(crate) fn open_connections(&self, ip: IpAddr) -> u32 {
        self.entries.get(&key(ip)).map_or(0, |e| e.open)
    }

    /// A connection from `ip` opens. On `Ok` the caller must call [`Table::handle_closed`]
    /// once when it ends.
    pub(crate) fn handle_opened(&mut self, ip: IpAddr, now_ms: u64) -> Result<(), Verdict> {
        let limit = self.settings.max_connections;
        if limit == 0 {
            return Ok(());
        }
        self.admit(ip, now_ms, |e| {
            if e.open >= limit {
                return Err(Refused::Connections { limit });
            }
            e.open += 1;
            Ok(())
        })
    }

    /// New settings (a reload). Places held stay counted and are given back as they end, even
    /// under a limit now off; what was admitted while a limit was off was never counted.
    pub(crate) fn set_settings(&mut self, settings: Settings) {
        self.settings = settings;
    }

    /// A connection [`Table::handle_opened`] admitted has ended.
    pub(crate) fn handle_closed(&mut self, ip: IpAddr, now_ms: u64) {
        self.release(ip, now_ms, |e| e.open = e.open.saturating_sub(1));
    }

    /// An event stream from `ip` opens; [`Table::handle_stream_closed`] when it ends.
    pub(crate) fn handle_stream_opened(&mut self, ip: IpAddr, now_ms: u64) -> Result<(), Verdict> {
        let limit = self.settings.max_streams;
        if limit == 0 {
            return Ok(());
        }
        self.admit(ip, now_ms, |e| {
            if e.streams >= limit {
                return Err(Refused::Streams { limit });
            }
            e.streams += 1;
            Ok(())
        })
    }

    pub(crate) fn handle_stream_closed(&mut self, ip: IpAddr, now_ms: u64) {
        self.release(ip, now_ms, |e| e.streams = e.streams.saturating_sub(1));
    }

    /// Counts one `rate` event from `ip` against its window.
    pub(crate) fn handle_rate(
        &mut self,
        ip: IpAddr,
        rate: Rate,
        now_ms: u64,
    ) -> Result<(), Verdict> {
        let limit = match rate {
            Rate::Upgrade => self.settings.upgrades,
            Rate::Request => self.settings.requests,
            Rate::Registration => self.settings.registrations,
        };
        if limit == 0 {
            return Ok(());
        }
        let window_ms = self.settings.window_ms;
        self.admit(ip, now_ms, |e| {
            let count = match rate {
                Rate::Upgrade => &mut e.upgrades,
                Rate::Request => &mut e.requests,
                Rate::Registration => &mut e.registrations,
            };
            if *count >= limit {
                let end = e.window_start_ms.saturating_add(window_ms);
                let left_ms = end.saturating_sub(now_ms);
                return Err(Refused::Rate {
                    rate,
                    limit,
                    retry_after_s: left_ms.div_ceil(1000).max(1),
                });
            }
            *count += 1;
            Ok(())
        })
    }

    /// Finds or makes `ip`'s entry, rolls its window and applies `count` to it.
    fn admit(
        &mut self,
        ip: IpAddr,
        now_ms: u64,
        count: impl FnOnce(&mut Entry) -> Result<(), Refused>,
    ) -> Result<(), Verdict> {
        let key = key(ip);
        let window_ms = self.settings.window_ms;
        if !self.entries.contains_key(&key) && self.entries.len() >= self.capacity {
            self.prune(now_ms);
            if self.entries.len() >= self.capacity {
                // Nowhere to keep this address's refusal count: every one is logged as a
                // warning by the caller's own per-port budget.
                return Err(Verdict {
                    refused: Refused::Full,
                    warn: Some(1),
                });
            }
        }
        let entry = self.entries.entry(key).or_insert(Entry {
            window_start_ms: now_ms,
            ..Entry::default()
        });
        entry.roll(now_ms, window_ms);
        match count(entry) {
            Ok(()) => Ok(()),
            Err(refused) => {
                entry.refused = entry.refused.saturating_add(1);
                let n = entry.refused;
                let warn = n.is_power_of_two().then_some(n);
                Err(Verdict { refused, warn })
            }
        }
    }

    fn release(&mut self, ip: IpAddr, now_ms: u64, release: impl FnOnce(&mut Entry)) {
        let key = key(ip);
        let window_ms = self.settings.window_ms;
        if let Some(entry) = self.entries.get_mut(&key) {
            release(entry);
            if entry.expired(now_ms, window_ms) {
                self.entries.remove(&key);
            }
        }
    }

    /// Drops every entry that holds nothing open and whose window is over; at most once a
    /// [`PRUNE_EVERY_MS`].
    fn prune(&mut self, now_ms: u64) {
        if self
            .last_prune_ms
            .is_some_and(|last| now_ms.saturating_sub(last) < PRUNE_EVERY_MS)
        {
            return;
        }
        self.last_prune_ms = Some(now_ms);
        let window_ms = self.settings.window_ms;
        self.entries.retain(|_, e| !e.expired(now_ms, window_ms));
    }
}

/// The table's key for `ip`: [`address_key`] (IPv6 by /64, IPv4-mapped as IPv4) as 16 bytes.
fn key(ip: IpAddr) -> u128 {
    match address_key(ip) {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().to_bits(),
        IpAddr::V6(v6) => v6.to_bits(),
    }
}

/// A token bucket: `burst` tokens, refilled at `rate` per second; each message takes one.
/// Integer arithmetic in thousandths of a token, so it is exact: over any interval of `t` ms it
/// admits at most `burst + rate·t/1000` messages. 24 bytes, no allocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TokenBucket {
    rate: u64,
    burst_milli: u64,
    level_milli: u64,
    last_ms: u64,
}

impl TokenBucket {
    /// A full bucket; `None` when `rate` is 0 (no limit).
    pub(crate) fn new(rate: u32, burst: u32, now_ms: u64) -> Option<Self> {
        (rate > 0).then(|| {
            let burst_milli = u64::from(burst.max(1)) * 1000;
            Self {
                rate: u64::from(rate),
                burst_milli,
                level_milli: burst_milli,
                last_ms: now_ms,
            }
        })
    }

    /// Takes a token for one message; `false` if there is none (the message is over the rate).
    #[inline]
    pub(crate) fn take(&mut self, now_ms: u64) -> bool {
        if now_ms > self.last_ms {
            // rate tokens a second is rate thousandths a millisecond.
            let refill = (now_ms - self.last_ms).saturating_mul(self.rate);
            self.level_milli = self
                .level_milli
                .saturating_add(refill)
                .min(self.burst_milli);
            self.last_ms = now_ms;
        }
        if self.level_milli >= 1000 {
            self.level_milli -= 1000;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests;
