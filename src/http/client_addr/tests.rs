use std::net::SocketAddr;

use proptest::prelude::*;

use super::*;

const SOCKET: &str = "10.0.0.9:51000";

fn socket() -> SocketAddr {
    SOCKET.parse().unwrap()
}

fn addr(text: &str) -> SocketAddr {
    text.parse().unwrap()
}

/// The client for these `X-Forwarded-For` lines, trusting `hops`.
fn xff(hops: u32, lines: &[&str]) -> Client {
    client_addr(
        hops,
        socket(),
        lines.iter().map(|l| l.as_bytes()),
        std::iter::empty(),
    )
}

/// The client for these `Forwarded` lines (and no X-Forwarded-For), trusting `hops`.
fn fwd(hops: u32, lines: &[&str]) -> Client {
    client_addr(
        hops,
        socket(),
        std::iter::empty(),
        lines.iter().map(|l| l.as_bytes()),
    )
}

#[test]
fn off_ignores_every_header() {
    assert_eq!(xff(0, &["203.0.113.7"]), Client::Socket(socket()));
    assert_eq!(fwd(0, &["for=203.0.113.7"]), Client::Socket(socket()));
    let proxy = ReverseProxy {
        enabled: false,
        num_proxies: 3,
    };
    assert_eq!(
        proxy.hops(),
        0,
        "num_proxies means nothing while reverse_proxy is off"
    );
    let on = ReverseProxy {
        enabled: true,
        num_proxies: 3,
    };
    assert_eq!(on.hops(), 3);
}

#[test]
fn no_header_is_the_socket() {
    assert_eq!(xff(1, &[]), Client::Socket(socket()));
    assert_eq!(xff(1, &[""]), Client::Socket(socket()));
    assert_eq!(xff(1, &[" , ,"]), Client::Socket(socket()));
}

#[test]
fn one_hop_takes_the_rightmost_entry() {
    assert_eq!(
        xff(1, &["203.0.113.7"]),
        Client::Forwarded(addr("203.0.113.7:0"))
    );
    // A client's own (spoofed) entries sit to the left of what the trusted proxy appended.
    assert_eq!(
        xff(1, &["1.1.1.1, 2.2.2.2, 203.0.113.7"]),
        Client::Forwarded(addr("203.0.113.7:0"))
    );
}

#[test]
fn n_hops_take_the_entry_n_from_the_right_of_the_chain() {
    // The chain is [a, b, c, socket]: hop 1 is c, 2 is b, 3 is a.
    let header = ["1.0.0.1,1.0.0.2,1.0.0.3"];
    assert_eq!(xff(1, &header), Client::Forwarded(addr("1.0.0.3:0")));
    assert_eq!(xff(2, &header), Client::Forwarded(addr("1.0.0.2:0")));
    assert_eq!(xff(3, &header), Client::Forwarded(addr("1.0.0.1:0")));
}

#[test]
fn fewer_entries_than_hops_give_the_leftmost() {
    // Express's proxy-addr: the walk stops at the end of the chain.
    let header = ["1.0.0.1, 1.0.0.2"];
    assert_eq!(xff(3, &header), Client::Forwarded(addr("1.0.0.1:0")));
    assert_eq!(xff(u32::MAX, &header), Client::Forwarded(addr("1.0.0.1:0")));
}

#[test]
fn several_header_lines_are_one_list_in_order() {
    let lines = ["1.0.0.1, 1.0.0.2", "1.0.0.3"];
    assert_eq!(xff(1, &lines), Client::Forwarded(addr("1.0.0.3:0")));
    assert_eq!(xff(2, &lines), Client::Forwarded(addr("1.0.0.2:0")));
    assert_eq!(xff(3, &lines), Client::Forwarded(addr("1.0.0.1:0")));
}

#[test]
fn blanks_and_empty_entries_are_skipped() {
    let header = [" 1.0.0.1 ,, \t1.0.0.2\t,  ,"];
    assert_eq!(xff(1, &header), Client::Forwarded(addr("1.0.0.2:0")));
    assert_eq!(xff(2, &header), Client::Forwarded(addr("1.0.0.1:0")));
}

#[test]
fn address_forms_with_and_without_ports() {
    for (entry, expected) in [
        ("192.0.2.1", "192.0.2.1:0"),
        ("192.0.2.1:4711", "192.0.2.1:4711"),
        ("2001:db8::1", "[2001:db8::1]:0"),
        ("::1", "[::1]:0"),
        ("[::1]", "[::1]:0"),
        ("[::1]:8443", "[::1]:8443"),
        ("[2001:db8:cafe::17]:4711", "[2001:db8:cafe::17]:4711"),
        // Without brackets a trailing group belongs to the IPv6 address, never a port.
        ("2001:db8::1:80", "[2001:db8::1:80]:0"),
        // IPv4 mapped into IPv6 is the IPv4 address, for the per-address limits.
        ("::ffff:192.0.2.1", "192.0.2.1:0"),
        ("\"[::1]:80\"", "[::1]:80"),
    ] {
        assert_eq!(
            xff(1, &[entry]),
            Client::Forwarded(addr(expected)),
            "entry {entry:?}"
        );
    }
}

#[test]
fn a_malformed_chosen_entry_falls_back_to_the_socket() {
    for entry in [
        "unknown",
        "_hidden",
        "not an address",
        "300.1.1.1",
        "192.0.2.1:99999",
        "192.0.2.1:",
        "[::1",
        "[::1]x",
        "[192.0.2.1]",
        "fe80::1%eth0",
        "\u{e9}",
    ] {
        let client = xff(1, &[entry]);
        assert_eq!(
            client,
            Client::Malformed {
                socket: socket(),
                entry: entry.to_owned()
            },
            "entry {entry:?}"
        );
        assert_eq!(client.addr(), socket());
    }
    assert_eq!(
        client_addr(1, socket(), [b"\xff\xfe".as_slice()], std::iter::empty()),
        Client::Malformed {
            socket: socket(),
            entry: "\u{fffd}\u{fffd}".to_owned()
        }
    );
}

#[test]
fn malformed_entries_beyond_the_chosen_one_do_not_matter() {
    assert_eq!(
        xff(1, &["garbage, [::1, 192.0.2.1"]),
        Client::Forwarded(addr("192.0.2.1:0"))
    );
}

#[test]
fn forwarded_header_when_there_is_no_x_forwarded_for() {
    assert_eq!(
        fwd(1, &["for=192.0.2.60;proto=http;by=203.0.113.43"]),
        Client::Forwarded(addr("192.0.2.60:0"))
    );
    assert_eq!(
        fwd(1, &[r#"For="[2001:db8:cafe::17]:4711""#]),
        Client::Forwarded(addr("[2001:db8:cafe::17]:4711"))
    );
    let chain = [
        "for=192.0.2.43, for=198.51.100.17",
        "for=\"[::1]\";proto=https",
    ];
    assert_eq!(fwd(1, &chain), Client::Forwarded(addr("[::1]:0")));
    assert_eq!(fwd(2, &chain), Client::Forwarded(addr("198.51.100.17:0")));
    assert_eq!(fwd(3, &chain), Client::Forwarded(addr("192.0.2.43:0")));
    assert_eq!(fwd(9, &chain), Client::Forwarded(addr("192.0.2.43:0")));
}

#[test]
fn forwarded_quoted_separators_and_hops_without_for() {
    // A quoted `,` or `;` is part of a value, not a separator.
    assert_eq!(
        fwd(1, &[r#"for=192.0.2.1;by="a,b;c""#]),
        Client::Forwarded(addr("192.0.2.1:0"))
    );
    // An element without `for=` is a hop whose address is unknown.
    assert_eq!(
        fwd(1, &["for=192.0.2.1, proto=https"]),
        Client::Malformed {
            socket: socket(),
            entry: String::new()
        }
    );
    assert_eq!(
        fwd(2, &["for=192.0.2.1, proto=https"]),
        Client::Forwarded(addr("192.0.2.1:0"))
    );
    assert_eq!(
        fwd(1, &["for=unknown"]),
        Client::Malformed {
            socket: socket(),
            entry: "unknown".to_owned()
        }
    );
}

#[test]
fn x_forwarded_for_wins_over_forwarded() {
    let client = client_addr(
        1,
        socket(),
        [b"192.0.2.1".as_slice()],
        [b"for=198.51.100.1".as_slice()],
    );
    assert_eq!(client, Client::Forwarded(addr("192.0.2.1:0")));
}

proptest! {
    /// Whatever the headers hold: no panic, and the address is the socket's or one that the
    /// headers contain.
    #[test]
    fn any_header_bytes(
        hops in 0u32..6,
        xff_lines in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 0..3),
        fwd_lines in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 0..3),
    ) {
        let client = client_addr(
            hops,
            socket(),
            xff_lines.iter().map(Vec::as_slice),
            fwd_lines.iter().map(Vec::as_slice),
        );
        if hops == 0 {
            prop_assert_eq!(client, Client::Socket(socket()));
        }
    }

    /// A chain of well-formed IPv4 entries: hop N is entry N from the right, or the leftmost.
    #[test]
    fn chain_of_addresses(
        entries in proptest::collection::vec(any::<[u8; 4]>(), 1..8),
        hops in 1u32..10,
    ) {
        let text: Vec<String> = entries
            .iter()
            .map(|o| std::net::Ipv4Addr::from(*o).to_string())
            .collect();
        let header = text.join(", ");
        let client = xff(hops, &[&header]);
        let index = entries.len().saturating_sub(hops as usize);
        let expected = SocketAddr::new(std::net::Ipv4Addr::from(entries[index]).into(), 0);
        prop_assert_eq!(client, Client::Forwarded(expected));
    }
}
