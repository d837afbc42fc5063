use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use proptest::prelude::*;

use super::*;

const MINUTE: u64 = 60_000;

fn settings() -> Settings {
    Settings {
        max_connections: 2,
        upgrades: 3,
        requests: 3,
        registrations: 3,
        max_streams: 2,
        window_ms: MINUTE,
    }
}

fn v4(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 0, 0, last))
}

#[test]
fn connections_are_admitted_up_to_the_limit_and_again_after_one_closes() {
    let mut t = Table::new(settings());
    assert_eq!(t.handle_opened(v4(1), 0), Ok(()));
    assert_eq!(t.handle_opened(v4(1), 0), Ok(()));
    let over = t.handle_opened(v4(1), 0).unwrap_err();
    assert_eq!(over.refused, Refused::Connections { limit: 2 });
    assert_eq!(over.warn, Some(1));
    // Another address has its own count.
    assert_eq!(t.handle_opened(v4(2), 0), Ok(()));
    t.handle_closed(v4(1), 5);
    assert_eq!(t.handle_opened(v4(1), 5), Ok(()));
}

#[test]
fn rates_refuse_over_the_limit_with_the_seconds_left_and_recover_in_the_next_window() {
    let mut t = Table::new(settings());
    for _ in 0..3 {
        assert_eq!(t.handle_rate(v4(1), Rate::Upgrade, 1000), Ok(()));
    }
    let over = t.handle_rate(v4(1), Rate::Upgrade, 30_500).unwrap_err();
    assert_eq!(
        over.refused,
        Refused::Rate {
            rate: Rate::Upgrade,
            limit: 3,
            retry_after_s: 31
        }
    );
    // Requests and registrations are counted apart from upgrades.
    assert_eq!(t.handle_rate(v4(1), Rate::Request, 30_500), Ok(()));
    assert_eq!(t.handle_rate(v4(1), Rate::Registration, 30_500), Ok(()));
    // The window began at 1000: at 61000 it is over.
    assert!(t.handle_rate(v4(1), Rate::Upgrade, 60_999).is_err());
    assert_eq!(t.handle_rate(v4(1), Rate::Upgrade, 61_000), Ok(()));
}

#[test]
fn refusals_warn_on_the_first_second_fourth_and_eighth_of_a_window() {
    let mut t = Table::new(settings());
    for _ in 0..3 {
        t.handle_rate(v4(1), Rate::Request, 0).unwrap();
    }
    let warns: Vec<_> = (0..9)
        .map(|_| t.handle_rate(v4(1), Rate::Request, 0).unwrap_err().warn)
        .collect();
    assert_eq!(
        warns,
        [
            Some(1),
            Some(2),
            None,
            Some(4),
            None,
            None,
            None,
            Some(8),
            None
        ]
    );
    // A new window starts the count again.
    t.handle_rate(v4(1), Rate::Request, MINUTE).unwrap();
}

#[test]
fn ipv6_addresses_of_one_64_count_together_and_mapped_ipv4_as_ipv4() {
    let mut t = Table::new(settings());
    let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
    let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
    let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
    t.handle_opened(a, 0).unwrap();
    t.handle_opened(b, 0).unwrap();
    assert!(t.handle_opened(a, 0).is_err());
    t.handle_opened(c, 0).unwrap();
    let mapped = IpAddr::V6(Ipv4Addr::new(10, 0, 0, 1).to_ipv6_mapped());
    t.handle_opened(v4(1), 0).unwrap();
    t.handle_opened(mapped, 0).unwrap();
    assert!(t.handle_opened(v4(1), 0).is_err());
}

#[test]
fn streams_are_counted_apart_from_connections() {
    let mut t = Table::new(settings());
    t.handle_stream_opened(v4(1), 0).unwrap();
    t.handle_stream_opened(v4(1), 0).unwrap();
    assert_eq!(
        t.handle_stream_opened(v4(1), 0).unwrap_err().refused,
        Refused::Streams { limit: 2 }
    );
    t.handle_opened(v4(1), 0).unwrap();
    t.handle_stream_closed(v4(1), 0);
    t.handle_stream_opened(v4(1), 0).unwrap();
}

#[test]
fn zero_is_no_limit_and_tracks_nothing() {
    let off = Settings {
        max_connections: 0,
        upgrades: 0,
        requests: 0,
        registrations: 0,
        max_streams: 0,
        window_ms: MINUTE,
    };
    assert!(off.is_off());
    let mut t = Table::new(off);
    for i in 0..1000 {
        t.handle_opened(v4(1), i).unwrap();
        t.handle_rate(v4(1), Rate::Upgrade, i).unwrap();
        t.handle_stream_opened(v4(1), i).unwrap();
    }
    assert_eq!(t.len(), 0);
}

#[test]
fn a_full_table_refuses_new_addresses_keeps_tracked_ones_and_frees_expired_entries() {
    let mut t = Table::with_capacity(settings(), 2);
    t.handle_opened(v4(1), 0).unwrap();
    t.handle_rate(v4(2), Rate::Request, 0).unwrap();
    let full = t.handle_opened(v4(3), 0).unwrap_err();
    assert_eq!(full.refused, Refused::Full);
    // Tracked addresses carry on.
    t.handle_opened(v4(1), 0).unwrap();
    t.handle_rate(v4(2), Rate::Request, 0).unwrap();
    // Once v4(2)'s window is over it holds nothing: the next new address takes its place.
    t.handle_opened(v4(3), MINUTE).unwrap();
    assert_eq!(t.len(), 2);
    // v4(1) still holds connections: never pruned.
    assert_eq!(t.open_connections(v4(1)), 2);
    assert_eq!(
        t.handle_opened(v4(4), 3 * MINUTE).unwrap_err().refused,
        Refused::Full
    );
}

#[test]
fn a_full_table_is_scanned_at_most_once_a_second() {
    let mut t = Table::with_capacity(settings(), 1);
    t.handle_rate(v4(1), Rate::Request, 0).unwrap();
    // Expired at MINUTE, but the scan at MINUTE - 1 came first: none until a second later.
    assert!(t.handle_opened(v4(2), MINUTE - 1).is_err());
    assert!(t.handle_opened(v4(2), MINUTE + 998).is_err());
    t.handle_opened(v4(2), MINUTE + 999).unwrap();
}

#[test]
fn an_entry_goes_when_its_last_connection_closes_after_its_window() {
    let mut t = Table::new(settings());
    t.handle_opened(v4(1), 0).unwrap();
    t.handle_closed(v4(1), 10);
    assert_eq!(t.len(), 1, "within the window the entry keeps its rates");
    t.handle_opened(v4(1), 20).unwrap();
    t.handle_closed(v4(1), MINUTE + 1);
    assert_eq!(t.len(), 0);
}

#[test]
fn the_token_bucket_admits_the_burst_then_the_rate() {
    let mut b = TokenBucket::new(10, 5, 0).unwrap();
    for _ in 0..5 {
        assert!(b.take(0));
    }
    assert!(!b.take(0));
    assert!(!b.take(99));
    assert!(b.take(100), "one token per 100 ms at 10/s");
    assert!(!b.take(100));
    // A long pause refills only up to the burst.
    assert_eq!((0..10).filter(|_| b.take(100_000)).count(), 5);
    assert!(TokenBucket::new(0, 5, 0).is_none(), "rate 0 is no limit");
}

#[test]
fn the_token_bucket_tolerates_a_clock_that_goes_back() {
    let mut b = TokenBucket::new(1, 1, 1000).unwrap();
    assert!(b.take(1000));
    assert!(!b.take(0));
    assert!(!b.take(1999));
    assert!(b.take(2000));
}

proptest! {
    /// Over any interval, a bucket admits at most burst + rate·t: no sequence of arrivals gets
    /// more through.
    #[test]
    fn a_token_bucket_never_admits_more_than_burst_plus_rate_times_t(
        rate in 1u32..200,
        burst in 1u32..50,
        gaps in proptest::collection::vec(0u64..50, 1..400),
    ) {
        let mut bucket = TokenBucket::new(rate, burst, 0).unwrap();
        let mut now = 0;
        let mut admitted = Vec::new();
        for gap in gaps {
            now += gap;
            if bucket.take(now) {
                admitted.push(now);
            }
        }
        for (i, &start) in admitted.iter().enumerate() {
            for (j, &end) in admitted.iter().enumerate().skip(i) {
                let count = (j - i + 1) as u64;
                let bound_milli = u64::from(burst) * 1000 + u64::from(rate) * (end - start);
                prop_assert!(count * 1000 <= bound_milli,
                    "{count} admitted in [{start}, {end}] ms at rate {rate}, burst {burst}");
            }
        }
    }

    /// However connections from many addresses open and close, each address's count never
    /// exceeds the limit, and once all have closed (and the window passed) the table is empty.
    #[test]
    fn connection_counts_stay_within_the_limit_and_return_to_zero(
        ops in proptest::collection::vec((0u8..6, any::<bool>(), 0u64..2000), 1..300),
    ) {
        let mut t = Table::new(settings());
        let mut open: Vec<(IpAddr, u64)> = Vec::new();
        let mut now = 0;
        for (addr, close, gap) in ops {
            now += gap;
            let ip = if addr % 2 == 0 {
                v4(addr)
            } else {
                IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, u16::from(addr), 0, 0, 0, u16::from(addr)))
            };
            if close {
                if let Some(i) = open.iter().position(|(o, _)| *o == ip) {
                    open.swap_remove(i);
                    t.handle_closed(ip, now);
                }
            } else if t.handle_opened(ip, now).is_ok() {
                open.push((ip, now));
            }
            let held = open.iter().filter(|(o, _)| *o == ip).count();
            prop_assert!(held <= 2);
            prop_assert_eq!(t.open_connections(ip) as usize, held);
        }
        for (ip, _) in open.drain(..) {
            t.handle_closed(ip, now + MINUTE);
        }
        // Entries that closed earlier go at the next prune.
        t.prune(now + 2 * MINUTE);
        prop_assert_eq!(t.len(), 0);
    }

    /// A table never holds more than its capacity, whatever addresses arrive.
    #[test]
    fn the_table_never_exceeds_its_capacity(
        addrs in proptest::collection::vec(any::<u128>(), 1..200),
    ) {
        let mut t = Table::with_capacity(settings(), 16);
        for (i, bits) in addrs.into_iter().enumerate() {
            let ip = IpAddr::V6(Ipv6Addr::from_bits(bits));
            let _ = t.handle_rate(ip, Rate::Upgrade, i as u64 * 100);
            prop_assert!(t.len() <= 16);
        }
    }
}

#[test]
fn the_limit_keys_are_validated() {
    use std::time::Duration;

    use crate::config::Config;

    let ok = Config::default();
    assert_eq!(ok.http_requests_per_minute, 3000, "Wilbur's default");
    ok.validate().unwrap();
    let bad = |change: fn(&mut Config), key: &str| {
        let mut c = Config::default();
        change(&mut c);
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains(key), "{e}");
    };
    bad(|c| c.message_burst = 0, "message_burst");
    bad(
        |c| c.max_connections_per_ip = u32::MAX,
        "max_connections_per_ip",
    );
    bad(
        |c| c.first_message_timeout = Duration::from_millis(50),
        "first_message_timeout",
    );
    bad(
        |c| c.sessions.max_streams_per_address = u32::MAX,
        "sessions.max_streams_per_address",
    );
    let off = Config {
        first_message_timeout: Duration::ZERO,
        messages_per_second: 0,
        ..Config::default()
    };
    off.validate().unwrap();
}

#[test]
fn places_held_when_a_limit_is_turned_off_are_still_given_back() {
    let mut t = Table::new(settings());
    assert_eq!(t.handle_opened(v4(1), 0), Ok(()));
    assert_eq!(t.handle_stream_opened(v4(1), 0), Ok(()));
    t.set_settings(Settings {
        max_connections: 0,
        max_streams: 0,
        ..settings()
    });
    // Off: nothing is counted or refused.
    for _ in 0..5 {
        assert_eq!(t.handle_opened(v4(1), 0), Ok(()));
    }
    // The places taken before are given back, and the address leaves the table.
    t.handle_closed(v4(1), MINUTE + 1);
    t.handle_stream_closed(v4(1), MINUTE + 1);
    assert_eq!(t.open_connections(v4(1)), 0);
    assert_eq!(t.len(), 0);
    // On again: counting starts from what is held now.
    t.set_settings(settings());
    assert_eq!(t.handle_opened(v4(1), MINUTE + 2), Ok(()));
    assert_eq!(t.handle_opened(v4(1), MINUTE + 2), Ok(()));
    assert!(t.handle_opened(v4(1), MINUTE + 2).is_err());
}
