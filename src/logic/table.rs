// SPDX-License-Identifier: GPL-2.0

//! The table line: `<main_dev> <spare_dev> [<#feature_args> <feature_arg>...]`.

use core::ffi::CStr;

/// A parsed table line. Devices are given as argument indices, so the caller can pass the
/// original C strings to the device lookup.
#[derive(Debug, PartialEq, Eq)]
pub struct TableLine {
    /// Index of the main device argument.
    pub main: usize,
    /// Index of the spare device argument.
    pub spare: usize,
}

/// Why a table line was refused.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub enum TableError {
    /// Fewer than the two device arguments.
    TooFewArgs,
    /// The feature-argument count is not a number.
    BadFeatureCount,
    /// The feature-argument count does not match the arguments that follow.
    FeatureCountMismatch,
    /// A feature argument this version does not know.
    UnknownFeature,
}

impl TableError {
    /// The message for `ti->error`.
    pub fn message(self) -> &'static CStr {
        match self {
            TableError::TooFewArgs => c"Invalid argument count: need <main_dev> <spare_dev>",
            TableError::BadFeatureCount => c"Invalid number of feature arguments",
            TableError::FeatureCountMismatch => c"Feature argument count does not match the arguments given",
            TableError::UnknownFeature => c"Unknown feature argument",
        }
    }
}

impl TableLine {
    /// Parses the arguments after the target name.
    pub fn parse<'a>(args: impl Iterator<Item = &'a [u8]>) -> Result<Self, TableError> {
        let mut n = 0usize;
        let mut features: Option<u32> = None;
        for a in args {
            match n {
                0 | 1 => {}
                2 => features = Some(parse_u32(a).ok_or(TableError::BadFeatureCount)?),
                // No feature arguments are defined yet.
                _ => return Err(TableError::UnknownFeature),
            }
            n += 1;
        }
        if n < 2 {
            return Err(TableError::TooFewArgs);
        }
        if features.is_some_and(|f| f != 0) {
            return Err(TableError::FeatureCountMismatch);
        }
        Ok(TableLine { main: 0, spare: 1 })
    }
}

/// A decimal `u32` with no sign, no spaces and no leading `+`.
pub fn parse_u32(s: &[u8]) -> Option<u32> {
    if s.is_empty() || s.len() > 10 {
        return None;
    }
    let mut v: u32 = 0;
    for &c in s {
        if !c.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add(u32::from(c - b'0'))?;
    }
    Some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(line: &str) -> Result<TableLine, TableError> {
        TableLine::parse(line.split_whitespace().map(str::as_bytes))
    }

    #[test]
    fn two_devices() {
        assert_eq!(parse("/dev/loop0 /dev/loop1"), Ok(TableLine { main: 0, spare: 1 }));
        assert_eq!(parse("7:0 7:1 0"), Ok(TableLine { main: 0, spare: 1 }));
    }

    #[test]
    fn refusals() {
        assert_eq!(parse(""), Err(TableError::TooFewArgs));
        assert_eq!(parse("/dev/loop0"), Err(TableError::TooFewArgs));
        assert_eq!(parse("a b x"), Err(TableError::BadFeatureCount));
        assert_eq!(parse("a b -1"), Err(TableError::BadFeatureCount));
        assert_eq!(parse("a b 1"), Err(TableError::FeatureCountMismatch));
        assert_eq!(parse("a b 1 frobnicate"), Err(TableError::UnknownFeature));
    }

    #[test]
    fn parse_u32_bounds() {
        assert_eq!(parse_u32(b"0"), Some(0));
        assert_eq!(parse_u32(b"4294967295"), Some(u32::MAX));
        assert_eq!(parse_u32(b"4294967296"), None);
        assert_eq!(parse_u32(b"+1"), None);
        assert_eq!(parse_u32(b""), None);
    }

    #[test]
    fn every_error_has_a_message() {
        for e in [TableError::TooFewArgs, TableError::BadFeatureCount, TableError::FeatureCountMismatch, TableError::UnknownFeature] {
            assert!(!e.message().to_bytes().is_empty());
        }
    }
}
