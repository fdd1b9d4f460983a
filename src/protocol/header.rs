//! The fixed 24-byte header: writing it, reading it, splitting a frame off a buffer, and the
//! request-id helpers for code that handles frames it did not decode.

use super::{DecodeError, Decoded, Limits, RequestId, MAX_VALUE_LEN_CAP};

/// The first two bytes of every frame.
pub const MAGIC: [u8; 2] = *b"UC";
/// Length of the fixed header.
pub const HEADER_LEN: usize = 24;

/// Byte range of the id field in a header.
const ID: std::ops::Range<usize> = 4..8;

/// Frame kinds (byte 2 of the header).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum FrameKind {
    /// Client to server.
    Request = 1,
    /// Server to client, one per request, in request order.
    Reply = 2,
    /// Server to client, unprompted: subscription events and wake-ups.
    Push = 3,
}

/// The fixed header, as plain fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// Frame kind byte.
    pub kind: u8,
    /// Opcode, reply code or push kind.
    pub code: u8,
    /// Request or subscription id.
    pub id: u32,
    /// Key length.
    pub key_len: u32,
    /// Value length.
    pub value_len: u32,
    /// Integer argument.
    pub arg: u64,
}

impl Header {
    /// The whole frame's length.
    pub fn frame_len(&self) -> usize {
        HEADER_LEN + self.key_len as usize + self.value_len as usize
    }
}

/// Writes a header into `out` (appends 24 bytes).
pub fn encode_header(out: &mut Vec<u8>, h: &Header) {
    let mut b = [0u8; HEADER_LEN];
    b[0..2].copy_from_slice(&MAGIC);
    b[2] = h.kind;
    b[3] = h.code;
    b[ID].copy_from_slice(&h.id.to_le_bytes());
    b[8..12].copy_from_slice(&h.key_len.to_le_bytes());
    b[12..16].copy_from_slice(&h.value_len.to_le_bytes());
    b[16..24].copy_from_slice(&h.arg.to_le_bytes());
    out.extend_from_slice(&b);
}

/// The id field of the frame whose header starts `buf`, or 0 while fewer than 8 bytes of it
/// are there. A server uses it to echo the id in the error reply to a frame it could not
/// decode (a length over the limit, a malformed body); it does not check magic or kind.
pub fn peek_id(buf: &[u8]) -> RequestId {
    match buf.get(ID) {
        Some(b) => RequestId::from_le_bytes([b[0], b[1], b[2], b[3]]),
        None => 0,
    }
}

/// Sets the id field of an encoded frame that starts `frame`, in place: a client that encodes
/// requests before it knows their ids (a pipeline, sent as one batch) assigns them this way.
///
/// # Panics
///
/// If `frame` is shorter than 8 bytes (it is not an encoded frame).
pub fn set_frame_id(frame: &mut [u8], id: RequestId) {
    frame[ID].copy_from_slice(&id.to_le_bytes());
}

/// Reads a header's fields, checking only the magic (the decoders check the rest).
#[inline]
pub fn read_header(buf: &[u8; HEADER_LEN]) -> Result<Header, DecodeError> {
    if buf[0..2] != MAGIC {
        return Err(DecodeError::BadMagic([buf[0], buf[1]]));
    }
    let u32_at = |i: usize| u32::from_le_bytes([buf[i], buf[i + 1], buf[i + 2], buf[i + 3]]);
    let mut arg = [0u8; 8];
    arg.copy_from_slice(&buf[16..24]);
    Ok(Header {
        kind: buf[2],
        code: buf[3],
        id: u32_at(4),
        key_len: u32_at(8),
        value_len: u32_at(12),
        arg: u64::from_le_bytes(arg),
    })
}

/// A frame split into header and borrowed body, before the code is interpreted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RawFrame<'a> {
    /// The header.
    pub header: Header,
    /// The key bytes.
    pub key: &'a [u8],
    /// The value bytes.
    pub value: &'a [u8],
}

/// Splits one frame of the given kind off the front of `buf`, checking `limits` from the header
/// (in the order given at [`DecodeError`]).
///
/// A request's value is also refused above [`MAX_VALUE_LEN_CAP`], whatever `limits` say, so
/// that no value a server stores can make a reply too long for the frame format.
#[inline]
pub fn decode_raw<'a>(
    buf: &'a [u8],
    kind: FrameKind,
    limits: &Limits,
) -> Result<Decoded<RawFrame<'a>>, DecodeError> {
    let Some(head) = buf.first_chunk::<HEADER_LEN>() else {
        // Check magic and kind as soon as they arrive, so garbage fails fast without waiting
        // for a whole header.
        let n = buf.len().min(2);
        if buf[..n] != MAGIC[..n] {
            let mut m = [0u8; 2];
            m[..n].copy_from_slice(&buf[..n]);
            return Err(DecodeError::BadMagic(m));
        }
        if let Some(&found) = buf.get(2) {
            if found != kind as u8 {
                return Err(DecodeError::WrongKind {
                    expected: kind as u8,
                    found,
                });
            }
        }
        return Ok(Decoded::Incomplete { need: HEADER_LEN });
    };
    let h = read_header(head)?;
    if h.kind != kind as u8 {
        return Err(DecodeError::WrongKind {
            expected: kind as u8,
            found: h.kind,
        });
    }
    if h.key_len > limits.max_key {
        return Err(DecodeError::KeyTooLarge {
            len: h.key_len,
            max: limits.max_key,
        });
    }
    let max_value = match kind {
        FrameKind::Request => limits.max_value.min(MAX_VALUE_LEN_CAP),
        FrameKind::Reply | FrameKind::Push => limits.max_value,
    };
    if h.value_len > max_value {
        return Err(DecodeError::ValueTooLarge {
            len: h.value_len,
            max: max_value,
        });
    }
    let len = h.frame_len();
    if buf.len() < len {
        return Ok(Decoded::Incomplete { need: len });
    }
    let key_end = HEADER_LEN + h.key_len as usize;
    Ok(Decoded::Frame(
        RawFrame {
            header: h,
            key: &buf[HEADER_LEN..key_end],
            value: &buf[key_end..len],
        },
        len,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_read_and_set_in_place() {
        let mut b = Vec::new();
        encode_header(
            &mut b,
            &Header {
                kind: 1,
                code: 2,
                id: 0x0102_0304,
                key_len: 0,
                value_len: 0,
                arg: 0,
            },
        );
        assert_eq!(peek_id(&b), 0x0102_0304);
        assert_eq!(peek_id(&b[..8]), 0x0102_0304);
        assert_eq!(peek_id(&b[..7]), 0, "too short to hold the id");
        set_frame_id(&mut b, 77);
        assert_eq!(peek_id(&b), 77);
        assert_eq!(read_header(b.first_chunk().unwrap()).unwrap().id, 77);
    }

    #[test]
    fn request_values_are_capped_whatever_the_limits() {
        let mut b = Vec::new();
        encode_header(
            &mut b,
            &Header {
                kind: FrameKind::Request as u8,
                code: 3,
                id: 1,
                key_len: 0,
                value_len: MAX_VALUE_LEN_CAP + 1,
                arg: 0,
            },
        );
        assert_eq!(
            decode_raw(&b, FrameKind::Request, &Limits::unlimited()),
            Err(DecodeError::ValueTooLarge {
                len: MAX_VALUE_LEN_CAP + 1,
                max: MAX_VALUE_LEN_CAP
            })
        );
        // A reply may be that long (a chunk).
        b[2] = FrameKind::Reply as u8;
        assert_eq!(
            decode_raw(&b, FrameKind::Reply, &Limits::unlimited()),
            Ok(Decoded::Incomplete {
                need: HEADER_LEN + MAX_VALUE_LEN_CAP as usize + 1
            })
        );
    }
}
