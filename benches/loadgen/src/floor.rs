//! The floor: a trivial server that speaks upcache's framing and answers every request with a
//! reply fixed by its opcode (a value of [`VALUE_SIZE`] bytes for `GET`, one per key for
//! `GET_MANY`), with no hashing and no store. What it reaches is what the kernel, the loopback
//! or Unix socket path and this client allow on this machine: every table shows each server
//! against it.
//!
//! Same shape as the real server (one mio loop, edge-triggered, every reply produced from one
//! read written in one write), so the difference is the work a real cache does.

use std::io::{self, Read, Write};

use mio::{Events, Interest, Poll, Token};
use upcache::protocol::{
    encode_value_head, encode_values_head, read_header, Op, Reply, Values, HEADER_LEN,
    MAX_BATCH_KEYS, VERSION,
};
use upcache_transports::{BindOptions, Endpoint, Tcp, Transport, Unix};

/// Bytes of the value the floor answers every `GET` (and each key of a `GET_MANY`) with.
pub const VALUE_SIZE: usize = 64;

/// Runs a floor server on `kind`, calling `ready` with where it listens. Never returns unless
/// the poll fails.
pub fn serve(
    unix_dir: Option<std::path::PathBuf>,
    ready: impl FnOnce(&Endpoint),
) -> io::Result<()> {
    let name = "floor".to_string();
    match unix_dir {
        None => run::<Tcp>(
            &BindOptions {
                dir: Default::default(),
                name,
            },
            ready,
        ),
        Some(dir) => run::<Unix>(&BindOptions { dir, name }, ready),
    }
}

struct Conn<S> {
    s: S,
    buf: Vec<u8>,
    out: Vec<u8>,
}

fn run<T: Transport>(opts: &BindOptions, ready: impl FnOnce(&Endpoint)) -> io::Result<()> {
    let (mut listener, endpoint) = T::bind(opts)?;
    let mut poll = Poll::new()?;
    poll.registry()
        .register(&mut listener, Token(usize::MAX), Interest::READABLE)?;
    ready(&endpoint);
    let value = [b'v'; VALUE_SIZE];
    let mut conns: Vec<Option<Conn<T::Conn>>> = Vec::new();
    let mut events = Events::with_capacity(256);
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        poll.poll(&mut events, None)?;
        for ev in events.iter() {
            if ev.token() == Token(usize::MAX) {
                while let Ok(mut s) = T::accept(&listener) {
                    let i = conns.iter().position(Option::is_none).unwrap_or_else(|| {
                        conns.push(None);
                        conns.len() - 1
                    });
                    poll.registry()
                        .register(&mut s, Token(i), Interest::READABLE)?;
                    conns[i] = Some(Conn {
                        s,
                        buf: Vec::new(),
                        out: Vec::new(),
                    });
                }
                continue;
            }
            let i = ev.token().0;
            let Some(c) = conns[i].as_mut() else { continue };
            let mut closed = false;
            // An end of stream already queued has no later event: read it out.
            let peer_closed = ev.is_read_closed() || ev.is_error();
            loop {
                match c.s.read(&mut chunk) {
                    Ok(0) => {
                        closed = true;
                        break;
                    }
                    Ok(n) => {
                        c.buf.extend_from_slice(&chunk[..n]);
                        answer(&mut c.buf, &mut c.out, &value);
                        // Replies are small and the client reads them: a blocking-style flush.
                        let mut at = 0;
                        while at < c.out.len() {
                            match c.s.write(&c.out[at..]) {
                                Ok(k) => at += k,
                                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                                    std::thread::yield_now()
                                }
                                Err(_) => {
                                    closed = true;
                                    break;
                                }
                            }
                        }
                        c.out.clear();
                        if n < chunk.len() && !peer_closed {
                            // A short read emptied the socket; the next arrival is a new
                            // event (the upcache server's loop does the same).
                            break;
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(_) => {
                        closed = true;
                        break;
                    }
                }
            }
            if closed {
                conns[i] = None;
            }
        }
    }
}

/// Answers every whole frame in `buf`: `Hello` with version 1, `Get` with a fixed 64-byte
/// value, `GetMany` with that value for each of its keys (its `arg`, as the request says; the
/// keys are not read), anything else with `Done`.
fn answer(buf: &mut Vec<u8>, out: &mut Vec<u8>, value: &[u8]) {
    let mut at = 0;
    while let Some(h) = buf[at..].first_chunk::<HEADER_LEN>() {
        // The load generator sends well-formed frames; anything else ends the answers.
        let Ok(h) = read_header(h) else { break };
        let len = h.frame_len();
        if buf.len() - at < len {
            break;
        }
        match Op::from_u8(h.code) {
            Some(Op::Hello) => Reply::Uint(VERSION).encode(h.id, out),
            Some(Op::Get) => {
                encode_value_head(out, h.id, value.len());
                out.extend_from_slice(value);
            }
            Some(Op::GetMany) => {
                // The load generator asks for at most `MAX_BATCH_KEYS` keys.
                let n = u32::try_from(h.arg).unwrap_or(0).min(MAX_BATCH_KEYS);
                let body = u64::from(n) * Values::entry_len(Some(value.len()));
                encode_values_head(out, h.id, n, u32::try_from(body).unwrap_or(u32::MAX));
                for _ in 0..n {
                    Values::entry_head(out, Some(value.len()));
                    out.extend_from_slice(value);
                }
            }
            _ => Reply::Done.encode(h.id, out),
        }
        at += len;
    }
    buf.drain(..at);
}

#[cfg(test)]
mod tests {
    use super::*;
    use upcache::protocol::{decode_reply, Batch, Decoded, Limits, Request};

    #[test]
    fn get_many_gets_the_value_for_each_key_and_other_frames_their_fixed_replies() {
        let (mut buf, mut scratch) = (Vec::new(), Vec::new());
        let keys = Batch::pack(
            &mut scratch,
            false,
            [(&b"a"[..], None), (b"bb", None), (b"c", None)],
        );
        Request::GetMany { keys }.encode(7, &mut buf);
        Request::Get { key: b"k" }.encode(8, &mut buf);
        let set_at = buf.len();
        Request::Set {
            key: b"k",
            value: b"v",
        }
        .encode(9, &mut buf);
        let value = [b'v'; VALUE_SIZE];
        let mut out = Vec::new();
        // The last frame cut short: the whole ones are answered, it waits for the rest.
        let mut got = buf[..buf.len() - 3].to_vec();
        answer(&mut got, &mut out, &value);
        assert_eq!(got, &buf[set_at..buf.len() - 3]);
        got.extend_from_slice(&buf[buf.len() - 3..]);
        answer(&mut got, &mut out, &value);
        assert!(got.is_empty(), "every whole frame answered");
        let mut at = 0;
        let mut replies = Vec::new();
        while at < out.len() {
            match decode_reply(&out[at..], &Limits::unlimited()) {
                Ok(Decoded::Frame((id, reply), n)) => {
                    replies.push((id, format!("{reply:?}")));
                    if let Reply::Values(v) = reply {
                        let got: Vec<_> = v.iter().collect();
                        assert_eq!(got, vec![Some(&value[..]); 3]);
                    }
                    at += n;
                }
                other => panic!("bad reply at {at}: {other:?}"),
            }
        }
        let ids: Vec<u32> = replies.iter().map(|r| r.0).collect();
        assert_eq!(ids, [7, 8, 9]);
        assert!(replies[0].1.starts_with("Values"), "{:?}", replies[0]);
        assert!(replies[2].1.starts_with("Done"), "{:?}", replies[2]);
    }
}
