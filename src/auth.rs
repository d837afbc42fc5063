//! Shared tokens: how a request presents one, and the constant-time comparison every check uses
//! (`player_token`, `streamer_token` and `sfu_token` in the handshake, `admin_token` on `/api`).

use subtle::ConstantTimeEq as _;

/// Whether `given` is `expected`, in time that tells nothing of how much of a guess was right
/// (only, as with any such comparison, whether its length was).
pub(crate) fn same_token(given: &[u8], expected: &str) -> bool {
    bool::from(given.ct_eq(expected.as_bytes()))
}

/// Whether one of the `Authorization` header values is `Bearer <expected>` (the scheme in any
/// case, RFC 7235).
pub(crate) fn bearer_presents<'a>(
    mut authorization: impl Iterator<Item = &'a [u8]>,
    expected: &str,
) -> bool {
    authorization.any(|value| {
        value
            .get(..7)
            .is_some_and(|scheme| scheme.eq_ignore_ascii_case(b"bearer "))
            && same_token(value[7..].trim_ascii(), expected)
    })
}

/// Whether the request presents `expected`: as the `token` query parameter (URL-decoded; all a
/// browser's WebSocket can set, as in Wilbur's `?token=`) or as `Authorization: Bearer` (from a
/// proxy or a native client).
pub(crate) fn presents_token<'a>(
    query: Option<&str>,
    authorization: impl Iterator<Item = &'a [u8]>,
    expected: &str,
) -> bool {
    let in_query = query.is_some_and(|q| {
        form_urlencoded::parse(q.as_bytes())
            .any(|(name, value)| name == "token" && same_token(value.as_bytes(), expected))
    });
    in_query || bearer_presents(authorization, expected)
}
