//! How long keys, values and tokens may be.

use std::fmt;

use super::chunks::{CHUNK_ENTRY_OVERHEAD, CHUNK_SOFT_BYTES};
use super::HEADER_LEN;

/// Longest key the protocol allows (64 KiB).
pub const MAX_KEY_LEN: u32 = 64 * 1024;
/// Default longest value (64 MiB).
pub const DEFAULT_MAX_VALUE_LEN: u32 = 64 * 1024 * 1024;
/// Longest handshake token a server reads (a longer one is a malformed `HELLO`). Tokens the
/// server makes are 32 lowercase hex digits.
pub const MAX_TOKEN_LEN: usize = 64;

/// The largest `max_value` a server may be started with: 4,294,639,608 bytes (4 GiB − 320 KiB
/// − 8 bytes), so that every reply fits the frame format's `u32` lengths.
///
/// The longest reply is an `ITEMS` chunk: up to [`CHUNK_SOFT_BYTES`] − 1 bytes of entries,
/// then one more entry of at most [`CHUNK_ENTRY_OVERHEAD`] + [`MAX_KEY_LEN`] + `max_value`
/// bytes ([`super::chunk_body_bound`]). With this cap that sum is exactly `u32::MAX`. Request
/// decoding refuses values above the cap whatever the [`Limits`] say.
pub const MAX_VALUE_LEN_CAP: u32 =
    u32::MAX - (CHUNK_SOFT_BYTES as u32 - 1) - CHUNK_ENTRY_OVERHEAD as u32 - MAX_KEY_LEN;

/// What a decoder accepts. Checked from the header, before the body is buffered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Longest key accepted (at most [`MAX_KEY_LEN`]).
    pub max_key: u32,
    /// Longest value accepted. For requests, at most [`MAX_VALUE_LEN_CAP`] takes effect.
    pub max_value: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_key: MAX_KEY_LEN,
            max_value: DEFAULT_MAX_VALUE_LEN,
        }
    }
}

/// A limit outside what the protocol allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LimitError {
    /// The value asked for.
    pub max_value: u32,
}

impl fmt::Display for LimitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "a longest value of {} bytes is over the protocol's cap of {MAX_VALUE_LEN_CAP} bytes \
             (replies must fit the frame format's 32-bit lengths)",
            self.max_value
        )
    }
}

impl std::error::Error for LimitError {}

impl Limits {
    /// Limits for a server: keys up to [`MAX_KEY_LEN`], values up to `max_value`.
    ///
    /// # Errors
    ///
    /// [`LimitError`] when `max_value` is over [`MAX_VALUE_LEN_CAP`].
    pub const fn new(max_value: u32) -> Result<Self, LimitError> {
        if max_value > MAX_VALUE_LEN_CAP {
            return Err(LimitError { max_value });
        }
        Ok(Limits {
            max_key: MAX_KEY_LEN,
            max_value,
        })
    }

    /// Limits for a client reading replies: values as large as any server may send, and
    /// packed key/item chunks, which ride in the value field.
    pub const fn unlimited() -> Self {
        Limits {
            max_key: MAX_KEY_LEN,
            max_value: u32::MAX,
        }
    }

    /// The largest frame these limits admit.
    pub fn max_frame(&self) -> usize {
        HEADER_LEN + self.max_key as usize + self.max_value as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_refuses_values_over_the_cap() {
        assert_eq!(
            Limits::new(DEFAULT_MAX_VALUE_LEN),
            Ok(Limits::default()),
            "the default is within the cap"
        );
        assert_eq!(
            Limits::new(MAX_VALUE_LEN_CAP).map(|l| l.max_value),
            Ok(MAX_VALUE_LEN_CAP)
        );
        let e = Limits::new(MAX_VALUE_LEN_CAP + 1).unwrap_err();
        assert_eq!(e.max_value, MAX_VALUE_LEN_CAP + 1);
        assert!(e.to_string().contains("4294639608"), "{e}");
    }
}
