//! The client's address behind reverse proxies (Wilbur's `reverse_proxy` and
//! `reverse_proxy_num_proxies`, which set Express's `trust proxy = N`). Sans-IO: header values
//! and the socket address in, an address out; it never reads a socket or a clock.
//!
//! Express's rule (the `proxy-addr` package with a number N): the chain is the
//! `X-Forwarded-For` entries followed by the socket's address, and the client is the address N
//! entries from the right of it (0 is the socket itself), or the leftmost entry when the chain is
//! shorter. Entries are split on commas, blanks around them dropped and empty ones skipped;
//! several header lines count as one list in their order. Express reads only `X-Forwarded-For`;
//! here, when a request has none, the `for=` parameters of the standard `Forwarded` header
//! (RFC 7239) form the chain the same way, one per element.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

/// How many reverse proxies in front of the server are trusted to append the address they saw.
/// Zero, the default, ignores the forwarding headers entirely: a client cannot choose its
/// address.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReverseProxy {
    /// `reverse_proxy`: read the forwarding headers at all.
    pub enabled: bool,
    /// `reverse_proxy_num_proxies`: the trusted hops (Express's `trust proxy` number).
    pub num_proxies: u32,
}

impl ReverseProxy {
    /// The hops to trust: 0 when off.
    pub(crate) fn hops(self) -> u32 {
        if self.enabled { self.num_proxies } else { 0 }
    }
}

/// Where a request's client address came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Client {
    /// The TCP peer: no proxy trusted, no forwarding header, or fewer entries than hops ended at
    /// the socket.
    Socket(SocketAddr),
    /// An entry of the forwarding chain, with port 0 when the entry had none.
    Forwarded(SocketAddr),
    /// The chosen entry is not an address (`unknown`, an obfuscated `_name`, garbage): the
    /// socket's address stands in, and the entry is kept for the warning.
    Malformed { socket: SocketAddr, entry: String },
}

impl Client {
    /// The address to use for logs and limits.
    pub(crate) fn addr(&self) -> SocketAddr {
        match self {
            Self::Socket(addr) | Self::Forwarded(addr) => *addr,
            Self::Malformed { socket, .. } => *socket,
        }
    }
}

/// The client address of a request that came from `socket` with these `X-Forwarded-For` and
/// `Forwarded` header lines, trusting `hops` proxies.
pub(crate) fn client_addr<'a, X, F>(
    hops: u32,
    socket: SocketAddr,
    x_forwarded_for: X,
    forwarded: F,
) -> Client
where
    X: IntoIterator<Item = &'a [u8]>,
    X::IntoIter: DoubleEndedIterator,
    F: IntoIterator<Item = &'a [u8]>,
    F::IntoIter: DoubleEndedIterator,
{
    if hops == 0 {
        return Client::Socket(socket);
    }
    let mut xff = x_forwarded_for.into_iter().peekable();
    // The chain is read from the right, so only the entries up to the chosen one are looked at
    // (and, for X-Forwarded-For, nothing is allocated however long the header is).
    let chosen = if xff.peek().is_some() {
        nth_from_right(
            xff.rev()
                .flat_map(|line| line.rsplit(|&b| b == b','))
                .map(trim)
                .filter(|entry| !entry.is_empty()),
            hops,
        )
    } else {
        nth_from_right(
            forwarded
                .into_iter()
                .rev()
                .flat_map(|line| split_quoted(line, b',').rev())
                .map(trim)
                .filter(|element| !element.is_empty())
                .map(forwarded_for),
            hops,
        )
    };
    let Some(entry) = chosen else {
        return Client::Socket(socket);
    };
    match parse_entry(entry) {
        Some(addr) => Client::Forwarded(addr),
        None => Client::Malformed {
            socket,
            entry: String::from_utf8_lossy(entry).into_owned(),
        },
    }
}

/// Entry `hops` of the chain counted from the right, where the socket is entry 0 and `entries`
/// are the header's from the right; the leftmost when there are fewer; `None` for no entries.
fn nth_from_right<'a>(entries: impl Iterator<Item = &'a [u8]>, hops: u32) -> Option<&'a [u8]> {
    let mut leftmost = None;
    for (i, entry) in (1..=hops).zip(entries) {
        leftmost = Some(entry);
        if i == hops {
            break;
        }
    }
    leftmost
}

fn trim(bytes: &[u8]) -> &[u8] {
    bytes.trim_ascii()
}

/// Splits `bytes` on `separator` outside double-quoted strings (RFC 7239 values may be quoted,
/// and a quoted IPv6 address with a port contains `:`; a quoted `,` is not a separator).
fn split_quoted(bytes: &[u8], separator: u8) -> impl DoubleEndedIterator<Item = &[u8]> {
    let mut quoted = false;
    let mut escaped = false;
    let mut bounds = Vec::new();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        if escaped {
            escaped = false;
        } else if quoted && b == b'\\' {
            escaped = true;
        } else if b == b'"' {
            quoted = !quoted;
        } else if b == separator && !quoted {
            bounds.push((start, i));
            start = i + 1;
        }
    }
    bounds.push((start, bytes.len()));
    bounds.into_iter().map(move |(s, e)| &bytes[s..e])
}

/// The `for=` value of one `Forwarded` element; an element without one is an unknown hop (an
/// empty entry, which does not parse as an address).
fn forwarded_for(element: &[u8]) -> &[u8] {
    split_quoted(element, b';')
        .map(trim)
        .find_map(|pair| {
            let (name, value) = pair.split_at(pair.iter().position(|&b| b == b'=')?);
            name.trim_ascii()
                .eq_ignore_ascii_case(b"for")
                .then(|| trim(&value[1..]))
        })
        .unwrap_or(b"")
}

/// An address as proxies write it: `192.0.2.1`, `192.0.2.1:4711`, `2001:db8::1`,
/// `[2001:db8::1]`, `[2001:db8::1]:4711`, any of them in double quotes. An IPv4 address mapped
/// into IPv6 becomes the IPv4 address, so it counts against the same per-address limits.
fn parse_entry(entry: &[u8]) -> Option<SocketAddr> {
    let text = std::str::from_utf8(entry).ok()?.trim();
    let text = text
        .strip_prefix('"')
        .and_then(|t| t.strip_suffix('"'))
        .unwrap_or(text);
    let (ip, port) = if let Some(rest) = text.strip_prefix('[') {
        let (ip, after) = rest.split_once(']')?;
        let port = match after {
            "" => 0,
            _ => after.strip_prefix(':')?.parse().ok()?,
        };
        (IpAddr::V6(ip.parse::<Ipv6Addr>().ok()?), port)
    } else if let Ok(ip) = text.parse::<IpAddr>() {
        (ip, 0)
    } else {
        // Only IPv4 can carry a port without brackets; `2001:db8::1:80` is an IPv6 address.
        let (ip, port) = text.rsplit_once(':')?;
        (IpAddr::V4(ip.parse().ok()?), port.parse().ok()?)
    };
    Some(SocketAddr::new(ip.to_canonical(), port))
}

#[cfg(test)]
mod tests;
