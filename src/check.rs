//! `ensure!` and `ensure_eq!`: the checks of the invariant modules shared by property tests and
//! fuzz targets (`router::invariants`, `sessions::invariants`), failing with a message
//! (`Result<_, String>`) that proptest and libFuzzer both report.

/// Fails the check with a message unless `cond` holds.
macro_rules! ensure {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err(format!($($msg)+));
        }
    };
}

/// Fails the check unless both sides are equal, showing both.
macro_rules! ensure_eq {
    ($left:expr, $right:expr) => {{
        let (left, right) = (&$left, &$right);
        ensure!(
            left == right,
            "{} != {}: {:?} != {:?}",
            stringify!($left),
            stringify!($right),
            left,
            right
        );
    }};
}
