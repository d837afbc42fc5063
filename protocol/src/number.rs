//! Exact decimal arithmetic on JSON number tokens, for matching numeric player ids and
//! de-duplicating streamer ids. Numbers are never rounded through `f64`.

/// Ids longer than this are not produced from a number (`1e1000000` would be a megabyte).
const MAX_ID_DIGITS: usize = 64;

/// The decimal form of a JSON number token that is a non-negative integer, exactly:
/// `1` and `1.0` and `1e0` give `"1"`, `12345678901234567` keeps every digit. `None` for a
/// fraction, a negative number, or anything that is not a JSON number.
pub fn integer_decimal(token: &str) -> Option<String> {
    let bytes = token.as_bytes();
    let (negative, rest) = match bytes.first() {
        Some(b'-') => (true, &bytes[1..]),
        _ => (false, bytes),
    };
    let int_len = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    if int_len == 0 || (int_len > 1 && rest[0] == b'0') {
        return None;
    }
    let (int_part, mut rest) = rest.split_at(int_len);
    let mut frac_part: &[u8] = &[];
    if let Some((b'.', after)) = rest.split_first() {
        let frac_len = after.iter().take_while(|b| b.is_ascii_digit()).count();
        if frac_len == 0 {
            return None;
        }
        (frac_part, rest) = after.split_at(frac_len);
    }
    let mut exponent: i64 = 0;
    if let Some((b'e' | b'E', after)) = rest.split_first() {
        let (exp_negative, digits) = match after.split_first() {
            Some((b'-', d)) => (true, d),
            Some((b'+', d)) => (false, d),
            _ => (false, after),
        };
        if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
            return None;
        }
        for &d in digits {
            exponent = exponent
                .saturating_mul(10)
                .saturating_add(i64::from(d - b'0'));
        }
        if exp_negative {
            exponent = -exponent;
        }
        rest = &[];
    }
    if !rest.is_empty() {
        return None;
    }
    // value = digits × 10^shift
    let mut digits: Vec<u8> = int_part.iter().chain(frac_part).copied().collect();
    let shift = exponent.saturating_sub(frac_part.len() as i64);
    if shift < 0 {
        let drop = usize::try_from(-shift).unwrap_or(usize::MAX);
        if drop > digits.len() {
            if digits.iter().any(|&d| d != b'0') {
                return None;
            }
            digits.clear();
        } else {
            let kept = digits.len() - drop;
            if digits[kept..].iter().any(|&d| d != b'0') {
                return None;
            }
            digits.truncate(kept);
        }
    }
    let first_nonzero = digits.iter().position(|&d| d != b'0');
    let Some(first_nonzero) = first_nonzero else {
        return Some("0".to_owned()); // zero, including -0 and 0e5
    };
    if negative {
        return None;
    }
    digits.drain(..first_nonzero);
    if shift > 0 {
        let zeros = usize::try_from(shift).unwrap_or(usize::MAX);
        if digits.len().saturating_add(zeros) > MAX_ID_DIGITS {
            return None;
        }
        digits.resize(digits.len() + zeros, b'0');
    }
    if digits.len() > MAX_ID_DIGITS {
        return None;
    }
    String::from_utf8(digits).ok()
}

/// Compares two unsigned decimal digit strings by value (leading zeros allowed).
pub fn cmp_decimal(a: &str, b: &str) -> std::cmp::Ordering {
    let a = a.trim_start_matches('0');
    let b = b.trim_start_matches('0');
    a.len().cmp(&b.len()).then_with(|| a.cmp(b))
}

/// `digits + 1` for an unsigned decimal digit string of any length (`""` counts as 0).
pub fn increment_decimal(digits: &str) -> String {
    let mut out: Vec<u8> = digits.trim_start_matches('0').bytes().collect();
    let mut i = out.len();
    loop {
        if i == 0 {
            out.insert(0, b'1');
            break;
        }
        i -= 1;
        if out[i] == b'9' {
            out[i] = b'0';
        } else {
            out[i] += 1;
            break;
        }
    }
    String::from_utf8(out).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cmp::Ordering;

    #[test]
    fn integers_keep_every_digit() {
        assert_eq!(integer_decimal("0").as_deref(), Some("0"));
        assert_eq!(integer_decimal("1").as_deref(), Some("1"));
        assert_eq!(
            integer_decimal("12345678901234567").as_deref(),
            Some("12345678901234567")
        );
        assert_eq!(
            integer_decimal("123456789012345678901234567890").as_deref(),
            Some("123456789012345678901234567890")
        );
    }

    #[test]
    fn integral_floats_and_exponents_match_their_integer() {
        assert_eq!(integer_decimal("1.0").as_deref(), Some("1"));
        assert_eq!(integer_decimal("1.500e1").as_deref(), Some("15"));
        assert_eq!(integer_decimal("1e3").as_deref(), Some("1000"));
        assert_eq!(integer_decimal("1E+2").as_deref(), Some("100"));
        assert_eq!(integer_decimal("2500e-2").as_deref(), Some("25"));
        assert_eq!(integer_decimal("-0").as_deref(), Some("0"));
        assert_eq!(integer_decimal("0.0e-7").as_deref(), Some("0"));
    }

    #[test]
    fn fractions_negatives_and_junk_match_nothing() {
        for token in [
            "1.5", "-1", "-1.0", "1e-1", "01", "1.", ".5", "1e", "abc", "", "\"1\"", "1e99999",
        ] {
            assert_eq!(integer_decimal(token), None, "{token}");
        }
    }

    #[test]
    fn decimal_helpers() {
        assert_eq!(increment_decimal(""), "1");
        assert_eq!(increment_decimal("0"), "1");
        assert_eq!(increment_decimal("123"), "124");
        assert_eq!(increment_decimal("999"), "1000");
        assert_eq!(
            increment_decimal("9999999999999999999999"),
            "10000000000000000000000"
        );
        assert_eq!(cmp_decimal("10", "9"), Ordering::Greater);
        assert_eq!(cmp_decimal("007", "7"), Ordering::Equal);
        assert_eq!(cmp_decimal("", "0"), Ordering::Equal);
    }
}
