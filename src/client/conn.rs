//! A client connection for requests and replies, shared by many threads.
//!
//! Writers take the send lock only to write their frame; readers take the receive lock and
//! read frames until their own reply arrives, stashing replies that belong to other threads
//! (which find them when they get the lock). So several threads keep requests in flight on one
//! connection, and a single thread pays nothing more than a write and a read.
//!
//! A pipeline holds both locks and switches the socket to non-blocking mode, writing requests
//! and reading replies as each side allows: it never deadlocks on full socket buffers, whatever
//! its length.

use std::collections::HashMap;
use std::io::{self, IoSlice};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use upcache_transports::{Endpoint, Stream};

use crate::error::{Error, Result};
use crate::protocol::{self, Decoded, ErrorCode, Limits, Reply, Request, RequestId};
use crate::readbuf::ReadBuf;

/// A reply, owned.
#[derive(Debug)]
pub(crate) enum Answer {
    Done,
    Nil,
    Value(Vec<u8>),
    Bool(bool),
    Int(i64),
    Uint(u64),
    Chunk {
        next: u64,
        until: u64,
        body: Vec<u8>,
    },
    Text(String),
    Versioned(Vec<u8>, u64),
    Version(u64),
    Values(Vec<Option<Vec<u8>>>),
    Leased,
    Waiting,
    Failed(ErrorCode, u64, String),
}

impl Answer {
    pub(crate) fn from_reply(r: &Reply<'_>) -> Self {
        match *r {
            Reply::Done => Answer::Done,
            Reply::Nil => Answer::Nil,
            Reply::Value(v) => Answer::Value(v.to_vec()),
            Reply::Bool(b) => Answer::Bool(b),
            Reply::Int(i) => Answer::Int(i),
            Reply::Uint(u) => Answer::Uint(u),
            Reply::Chunk { next, until, body } => Answer::Chunk {
                next,
                until,
                body: body.to_vec(),
            },
            Reply::Text(t) => Answer::Text(String::from_utf8_lossy(t).into_owned()),
            Reply::Versioned { value, version } => Answer::Versioned(value.to_vec(), version),
            Reply::Version(v) => Answer::Version(v),
            Reply::Values(v) => Answer::Values(v.iter().map(|v| v.map(<[u8]>::to_vec)).collect()),
            Reply::Leased => Answer::Leased,
            Reply::Waiting => Answer::Waiting,
            Reply::Error { code, arg, message } => {
                Answer::Failed(code, arg, String::from_utf8_lossy(message).into_owned())
            }
        }
    }
}

/// What a connection knows about its server.
#[derive(Clone, Debug)]
pub(crate) struct Peer {
    pub name: String,
    pub endpoint: Endpoint,
    pub token: String,
    /// Limits of the server: checked before sending.
    pub limits: Limits,
    /// Longest wait for the server to take a request or send a reply.
    pub request_timeout: Option<Duration>,
    /// How long a lease of `get_or_compute` lasts, in ms (`Builder::lease_timeout`).
    pub lease_timeout_ms: u64,
}

impl Peer {
    pub(crate) fn gone(&self) -> Error {
        Error::ServerGone {
            name: self.name.clone(),
        }
    }

    /// Limits for reading this server's frames: a value, or a chunk holding one item.
    pub(crate) fn read_limits(&self) -> Limits {
        let slack = protocol::MAX_KEY_LEN.saturating_add(64);
        Limits {
            max_key: protocol::MAX_KEY_LEN,
            max_value: self.limits.max_value.saturating_add(slack),
        }
    }

    /// The error for an unexpected error reply.
    pub(crate) fn failed(&self, code: ErrorCode, arg: u64, message: String) -> Error {
        let l = (self.limits.max_key as usize, self.limits.max_value as usize);
        Error::from_reply(code, arg, message.as_bytes(), l)
    }

    /// Checks key and value sizes before anything is sent.
    pub(crate) fn check(&self, key: &[u8], value: &[u8]) -> Result<()> {
        if key.len() > self.limits.max_key as usize {
            return Err(Error::KeyTooLarge {
                len: key.len(),
                max: self.limits.max_key as usize,
            });
        }
        if value.len() > self.limits.max_value as usize {
            let max = self.limits.max_value as usize;
            return Err(Error::ValueTooLarge {
                len: value.len(),
                max,
            });
        }
        Ok(())
    }
}

/// Why connecting failed: worth another try (the server may be exiting or starting), or not.
#[derive(Debug)]
pub(crate) enum ConnectError {
    Retry(String),
    Fatal(Error),
}

/// Connect timeout, and handshake timeout.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(2);

/// Connects and shakes hands; returns the stream, blocking with no timeouts.
pub(crate) fn connect(peer: &Peer) -> std::result::Result<(Stream, ReadBuf), ConnectError> {
    let retry = |what: &str, e: io::Error| ConnectError::Retry(format!("{what}: {e}"));
    let stream = upcache_transports::connect(&peer.endpoint, CONNECT_TIMEOUT)
        .map_err(|e| retry("connecting", e))?;
    stream
        .set_timeout(Some(HANDSHAKE_TIMEOUT))
        .map_err(|e| retry("connecting", e))?;
    let mut hello = Vec::new();
    Request::Hello {
        version: protocol::VERSION,
        token: peer.token.as_bytes(),
    }
    .encode(0, &mut hello);
    stream
        .write_all(&hello)
        .map_err(|e| retry("handshake", e))?;
    let mut rbuf = ReadBuf::default();
    let handshake = |detail: String| {
        ConnectError::Fatal(Error::Handshake {
            name: peer.name.clone(),
            detail,
        })
    };
    loop {
        match protocol::decode_reply(rbuf.bytes(), &Limits::default()) {
            Ok(Decoded::Frame((_, reply), n)) => {
                let result = match reply {
                    Reply::Uint(v) if v == protocol::VERSION => Ok(()),
                    Reply::Error {
                        code: ErrorCode::VersionMismatch,
                        arg,
                        ..
                    } => Err(ConnectError::Fatal(Error::VersionMismatch {
                        server: arg,
                        client: protocol::VERSION,
                    })),
                    Reply::Error {
                        code: ErrorCode::Unauthorized,
                        ..
                    } => Err(handshake("the server refused our token".into())),
                    other => Err(handshake(format!("unexpected handshake reply {other:?}"))),
                };
                rbuf.consume(n);
                result?;
                break;
            }
            Ok(Decoded::Incomplete { need }) => match rbuf.read_from(&mut &stream, need) {
                Ok(0) => {
                    return Err(ConnectError::Retry(
                        "the server closed the connection".into(),
                    ))
                }
                Ok(_) => {}
                Err(e)
                    if e.kind() == io::ErrorKind::WouldBlock
                        || e.kind() == io::ErrorKind::TimedOut =>
                {
                    return Err(handshake("no answer to the handshake".into()))
                }
                Err(e) => return Err(retry("handshake", e)),
            },
            Err(e) => return Err(handshake(format!("not an upcache server ({e})"))),
        }
    }
    stream
        .set_timeout(peer.request_timeout)
        .map_err(|e| retry("connecting", e))?;
    Ok((stream, rbuf))
}

struct Tx {
    buf: Vec<u8>,
    next_id: RequestId,
}

struct Rx {
    buf: ReadBuf,
    stash: HashMap<RequestId, Answer>,
}

/// A request/reply connection.
pub(crate) struct Conn {
    stream: Stream,
    peer: Peer,
    limits: Limits,
    tx: Mutex<Tx>,
    rx: Mutex<Rx>,
    /// [`ALIVE`], or why the connection is unusable.
    state: AtomicU8,
}

const ALIVE: u8 = 0;
const GONE: u8 = 1;
const TIMED_OUT: u8 = 2;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock leaves plain buffers behind; the connection is marked gone
    // by then if its stream is out of step.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Conn {
    pub(crate) fn open(peer: &Peer) -> std::result::Result<Self, ConnectError> {
        let (stream, buf) = connect(peer)?;
        Ok(Conn {
            stream,
            limits: peer.read_limits(),
            peer: peer.clone(),
            tx: Mutex::new(Tx {
                buf: Vec::new(),
                next_id: 1,
            }),
            rx: Mutex::new(Rx {
                buf,
                stash: HashMap::new(),
            }),
            state: AtomicU8::new(ALIVE),
        })
    }

    pub(crate) fn peer(&self) -> &Peer {
        &self.peer
    }

    /// Marks the connection unusable (`why`: [`GONE`] or [`TIMED_OUT`]), wakes every thread
    /// blocked on it, and returns the error every call gets from now on.
    fn break_with(&self, why: u8) -> Error {
        if self
            .state
            .compare_exchange(ALIVE, why, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
        {
            let _ = self.stream.shutdown();
        }
        self.broken()
    }

    /// The server closed the connection, or it failed.
    fn fail(&self) -> Error {
        self.break_with(GONE)
    }

    /// An I/O error: a timeout (the socket's, or a poll's) means the server stopped answering.
    fn fail_io(&self, e: io::Error) -> Error {
        match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => self.break_with(TIMED_OUT),
            _ => self.fail(),
        }
    }

    fn broken(&self) -> Error {
        match self.state.load(Ordering::SeqCst) {
            TIMED_OUT => Error::Timeout {
                name: self.peer.name.clone(),
                after: self.peer.request_timeout.unwrap_or_default(),
            },
            _ => self.peer.gone(),
        }
    }

    fn alive(&self) -> Result<()> {
        match self.state.load(Ordering::Relaxed) {
            ALIVE => Ok(()),
            _ => Err(self.broken()),
        }
    }

    /// Sends one request and waits for its reply.
    pub(crate) fn call(&self, req: &Request<'_>) -> Result<Answer> {
        self.alive()?;
        let id = {
            let mut tx = lock(&self.tx);
            let id = tx.next_id;
            tx.next_id = id.wrapping_add(1);
            tx.buf.clear();
            let value = req.encode_head(id, &mut tx.buf);
            if let Err(e) = write_all(&self.stream, &[&tx.buf, value]) {
                return Err(self.fail_io(e));
            }
            id
        };
        let mut rx = lock(&self.rx);
        loop {
            if let Some(a) = rx.stash.remove(&id) {
                return Ok(a);
            }
            let (rid, answer) = self.read_one(&mut rx)?;
            if rid == id {
                return Ok(answer);
            }
            rx.stash.insert(rid, answer);
        }
    }

    /// Reads one reply, blocking.
    fn read_one(&self, rx: &mut Rx) -> Result<(RequestId, Answer)> {
        loop {
            match protocol::decode_reply(rx.buf.bytes(), &self.limits) {
                Ok(Decoded::Frame((id, reply), n)) => {
                    let a = Answer::from_reply(&reply);
                    rx.buf.consume(n);
                    return Ok((id, a));
                }
                Ok(Decoded::Incomplete { need }) => match rx.buf.read_from(&mut &self.stream, need)
                {
                    Ok(0) => return Err(self.fail()),
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(self.fail_io(e)),
                },
                Err(e) => {
                    self.fail();
                    return Err(Error::Protocol(e));
                }
            }
        }
    }

    /// Sends `frames` (encoded requests with ids to be assigned, `count` of them, each starting
    /// at an offset in `starts`) and returns their replies in order.
    pub(crate) fn pipeline(&self, frames: &mut [u8], starts: &[usize]) -> Result<Vec<Answer>> {
        self.alive()?;
        let n = starts.len();
        let mut tx = lock(&self.tx);
        let mut rx = lock(&self.rx);
        let first = tx.next_id;
        tx.next_id = first.wrapping_add(n as u32);
        for (i, &at) in starts.iter().enumerate() {
            protocol::set_frame_id(&mut frames[at..], first.wrapping_add(i as u32));
        }
        let mut answers = Vec::with_capacity(n);
        // Replies to earlier requests of other threads may still be in flight: stash them.
        self.stream.set_nonblocking(true).map_err(|_| self.fail())?;
        let result = self.exchange(frames, first, n, &mut rx, &mut answers);
        if result.is_ok() {
            self.stream
                .set_nonblocking(false)
                .map_err(|_| self.fail())?;
        }
        result.map(|()| answers)
    }

    fn exchange(
        &self,
        frames: &[u8],
        first: RequestId,
        n: usize,
        rx: &mut Rx,
        answers: &mut Vec<Answer>,
    ) -> Result<()> {
        let mut written = 0;
        while answers.len() < n {
            let mut progress = false;
            if written < frames.len() {
                let end = frames.len().min(written + (256 << 10));
                match self
                    .stream
                    .write_vectored(&[IoSlice::new(&frames[written..end])])
                {
                    Ok(0) => return Err(self.fail()),
                    Ok(k) => {
                        written += k;
                        progress = true;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => progress = true,
                    Err(_) => return Err(self.fail()),
                }
            }
            // Take every whole reply already buffered.
            loop {
                match protocol::decode_reply(rx.buf.bytes(), &self.limits) {
                    Ok(Decoded::Frame((id, reply), len)) => {
                        let a = Answer::from_reply(&reply);
                        rx.buf.consume(len);
                        if id.wrapping_sub(first) < n as u32 {
                            if id.wrapping_sub(first) as usize != answers.len() {
                                self.fail();
                                return Err(Error::Protocol(protocol::DecodeError::Malformed(
                                    "reply out of order",
                                )));
                            }
                            answers.push(a);
                        } else {
                            rx.stash.insert(id, a);
                        }
                    }
                    Ok(Decoded::Incomplete { need }) => {
                        match rx.buf.read_from(&mut &self.stream, need) {
                            Ok(0) => return Err(self.fail()),
                            Ok(_) => {
                                progress = true;
                                continue;
                            }
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                            Err(_) => return Err(self.fail()),
                        }
                    }
                    Err(e) => {
                        self.fail();
                        return Err(Error::Protocol(e));
                    }
                }
                if answers.len() == n {
                    break;
                }
            }
            if !progress
                && answers.len() < n
                && !poll_fd(
                    self.stream.as_raw_fd(),
                    written < frames.len(),
                    self.peer.request_timeout,
                )
            {
                return Err(self.break_with(TIMED_OUT));
            }
        }
        Ok(())
    }
}

/// Writes every byte of `parts`, in order, with vectored writes.
pub(crate) fn write_all(stream: &Stream, parts: &[&[u8]]) -> io::Result<()> {
    let mut parts: Vec<&[u8]> = parts.iter().copied().filter(|p| !p.is_empty()).collect();
    let mut i = 0;
    while i < parts.len() {
        let iov: Vec<IoSlice<'_>> = parts[i..].iter().map(|p| IoSlice::new(p)).collect();
        let mut n = match stream.write_vectored(&iov) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        while i < parts.len() && n >= parts[i].len() {
            n -= parts[i].len();
            i += 1;
        }
        if n > 0 {
            parts[i] = &parts[i][n..];
        }
    }
    Ok(())
}

/// Blocks until `fd` is readable, or writable when `write` is set (a dead peer makes it both),
/// or `timeout` passes (then false).
fn poll_fd(fd: i32, write: bool, timeout: Option<Duration>) -> bool {
    let events = libc::POLLIN | if write { libc::POLLOUT } else { 0 };
    let mut p = libc::pollfd {
        fd,
        events,
        revents: 0,
    };
    let ms = timeout.map_or(-1, |t| t.as_millis().clamp(1, i32::MAX as u128) as i32);
    loop {
        // SAFETY: one valid pollfd.
        match unsafe { libc::poll(&mut p, 1, ms) } {
            0 => return false,
            n if n > 0 => return true,
            _ if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted => {}
            _ => return true, // let the next read or write report the error
        }
    }
}

/// How long a call waits for an answer beyond the time a wait was asked to take.
pub(crate) const WAIT_GRACE: Duration = Duration::from_secs(2);
