//! A read buffer that assembles frames from a stream, shared by the server and the client.
//!
//! It grows only as bytes arrive (at most doubling per read, up to the frame being assembled),
//! so a hostile length in a header costs nothing until the bytes are really sent, and it gives
//! back a large allocation once it is empty.

use std::io::{self, Read};

/// A read buffer: bytes `start..end` of `data` are received and not yet consumed.
#[derive(Default)]
pub struct ReadBuf {
    data: Vec<u8>,
    start: usize,
    end: usize,
    /// Whether the last read got less than the room it offered.
    short: bool,
}

/// Size of one read.
const READ_CHUNK: usize = 64 * 1024;
/// A buffer bigger than this is given back once empty.
const KEEP_MAX: usize = 1 << 20;

impl ReadBuf {
    /// The unconsumed bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.data[self.start..self.end]
    }

    /// Marks `n` bytes as consumed.
    pub fn consume(&mut self, n: usize) {
        self.start += n;
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
            if self.data.len() > KEEP_MAX {
                self.data = Vec::new();
            }
        }
    }

    /// Whether the last [`ReadBuf::read_from`] got fewer bytes than it had room for. A stream
    /// socket's read returns less than asked only when it has emptied the socket's receive
    /// queue, so after such a read the socket is drained at that instant, and with
    /// edge-triggered readiness any later arrival is a new event: the read that would only say
    /// `WouldBlock` can be skipped.
    pub fn drained(&self) -> bool {
        self.short
    }

    /// Reads once from `r`, making room for up to `need` unconsumed bytes in all (the frame
    /// being assembled), but growing no faster than the bytes that arrive. `Ok(0)` is end of
    /// stream.
    pub fn read_from<R: Read>(&mut self, r: &mut R, need: usize) -> io::Result<usize> {
        let have = self.end - self.start;
        // Room for the unconsumed bytes plus the rest of the frame, or one chunk more,
        // growing no faster than doubling.
        let want = need.max(have + READ_CHUNK);
        let want = want.min((self.data.len() * 2).max(have + READ_CHUNK));
        if self.data.len() - self.start < want {
            if want > self.data.len() {
                let mut v = vec![0u8; want];
                v[..have].copy_from_slice(self.bytes());
                self.data = v;
            } else {
                self.data.copy_within(self.start..self.end, 0);
            }
            self.start = 0;
            self.end = have;
        }
        let room = self.data.len() - self.end;
        let n = r.read(&mut self.data[self.end..])?;
        self.end += n;
        self.short = n < room;
        Ok(n)
    }
}

impl std::fmt::Debug for ReadBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadBuf")
            .field("len", &(self.end - self.start))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_buf_assembles_a_large_frame_and_resets() {
        let data: Vec<u8> = (0..200_000u32).map(|i| i as u8).collect();
        let mut src = &data[..];
        let mut rb = ReadBuf::default();
        let mut reads = Vec::new();
        while rb.bytes().len() < data.len() {
            // Room for a little more than there is, so the last read comes up short.
            assert!(rb.read_from(&mut src, data.len() + 100).unwrap() > 0);
            assert!(rb.data.len() <= 2 * data.len() + 200);
            reads.push(rb.drained());
        }
        // Every read but the last filled the room it offered; the last emptied the source.
        assert_eq!(reads.pop(), Some(true));
        assert!(reads.iter().all(|&short| !short), "{reads:?}");
        assert_eq!(rb.bytes(), &data[..]);
        rb.consume(data.len());
        assert!(rb.bytes().is_empty());
    }
}
