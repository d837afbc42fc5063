//! The open-file limit: at start the soft `RLIMIT_NOFILE` is raised to the hard limit, and the
//! connections it allows are logged. Every connection holds a descriptor, and systemd starts
//! services with a soft limit of 1,024, so without this the server would serve about 1,000
//! connections whatever its memory. Failing to raise it is a warning, never fatal.

use tracing::{info, warn};

/// Descriptors assumed in use besides connections when `/proc/self/fd` cannot be read: stdio,
/// the three listeners, the runtime's epoll and eventfd, and a margin.
const RESERVED_FALLBACK: u64 = 16;

/// Raises the soft limit to the hard one and logs the result: "file descriptor limit N
/// (was M): about K connections".
pub(crate) fn raise_and_log() {
    match raise() {
        Ok((was, now)) => {
            let connections = capacity(now);
            if now == was {
                info!(
                    "file descriptor limit {now} (already the hard limit): about {connections} connections"
                );
            } else {
                info!("file descriptor limit {now} (was {was}): about {connections} connections");
            }
        }
        Err((was, e)) => {
            let note = was.map_or_else(String::new, |was| {
                format!("; limit {was}: about {} connections", capacity(was))
            });
            warn!("cannot raise the file descriptor limit: {e}{note}");
        }
    }
}

/// (soft limit before, soft limit after); on failure, the limit before if it could be read.
#[cfg(unix)]
fn raise() -> Result<(u64, u64), (Option<u64>, std::io::Error)> {
    let (was, _hard) = rlimit::getrlimit(rlimit::Resource::NOFILE).map_err(|e| (None, e))?;
    // Raises the soft limit to the hard one (on macOS also within kern.maxfilesperproc).
    let now = rlimit::increase_nofile_limit(u64::MAX).map_err(|e| (Some(was), e))?;
    Ok((was, now))
}

#[cfg(not(unix))]
fn raise() -> Result<(u64, u64), (Option<u64>, std::io::Error)> {
    Err((
        None,
        std::io::Error::new(std::io::ErrorKind::Unsupported, "not a Unix system"),
    ))
}

/// Connections a soft limit of `limit` leaves room for: one descriptor each, less those open
/// now.
fn capacity(limit: u64) -> u64 {
    let open =
        std::fs::read_dir("/proc/self/fd").map_or(RESERVED_FALLBACK, |dir| dir.count() as u64);
    limit.saturating_sub(open)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capacity_leaves_out_the_descriptors_already_open() {
        let open = std::fs::read_dir("/proc/self/fd").map_or(0, |dir| dir.count() as u64);
        assert!(open >= 3, "stdio at least");
        let cap = capacity(10_000);
        // The read_dir above and the one inside may differ by their own descriptor.
        assert!(
            (10_000 - open - 1..=10_000 - open + 1).contains(&cap),
            "{cap}"
        );
        assert_eq!(capacity(0), 0);
    }
}
