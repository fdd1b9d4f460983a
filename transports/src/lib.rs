//! Transports for upcache: how bytes get between a client and the server.
//!
//! The server loop and the client never name a socket type. They use:
//!
//! - [`Transport`] on the server side: bind a listener, accept connections. Both are
//!   [`mio::event::Source`]s, so the server's event loop can register them, and both are
//!   non-blocking.
//! - [`connect`] on the client side: a blocking [`Stream`] to an [`Endpoint`].
//!
//! Two transports exist: [`Tcp`] (loopback only, `TCP_NODELAY`) and [`Unix`] (a socket file
//! with mode 0600, peers checked with `SO_PEERCRED`). Adding one means adding a type here that
//! implements [`Transport`], a variant of [`Kind`] and [`Endpoint`], and one arm in [`connect`];
//! the server's own dispatch on [`Kind`] is the only other place that names the choice.
#![deny(missing_docs, missing_debug_implementations)]

use std::io::{self, IoSlice, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Which transport a server uses. TCP is the default, as in the original `upcache`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Kind {
    /// TCP on 127.0.0.1, an ephemeral port.
    #[default]
    Tcp,
    /// A Unix domain socket file beside the connection file.
    Unix,
}

impl Kind {
    /// The kind named `name` (see [`Kind::name`]).
    pub fn from_name(name: &str) -> Option<Kind> {
        [Kind::Tcp, Kind::Unix]
            .into_iter()
            .find(|k| k.name() == name)
    }

    /// The name used in connection files and benchmark output (`"tcp"`, `"unix"`).
    pub fn name(self) -> &'static str {
        match self {
            Kind::Tcp => "tcp",
            Kind::Unix => "unix",
        }
    }
}

/// Where a server listens. Recorded in the connection file; read back by every opener.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// A loopback TCP address.
    Tcp(SocketAddr),
    /// The path of a Unix domain socket.
    Unix(PathBuf),
}

impl Endpoint {
    /// Parses what [`Endpoint`]'s `Display` writes: `tcp://127.0.0.1:4000`, `unix:///path`.
    pub fn parse(s: &str) -> Option<Endpoint> {
        if let Some(a) = s.strip_prefix("tcp://") {
            return a.parse().ok().map(Endpoint::Tcp);
        }
        s.strip_prefix("unix://")
            .filter(|p| !p.is_empty())
            .map(|p| Endpoint::Unix(p.into()))
    }

    /// The transport this endpoint belongs to.
    pub fn kind(&self) -> Kind {
        match self {
            Endpoint::Tcp(_) => Kind::Tcp,
            Endpoint::Unix(_) => Kind::Unix,
        }
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Tcp(a) => write!(f, "tcp://{a}"),
            Endpoint::Unix(p) => write!(f, "unix://{}", p.display()),
        }
    }
}

/// What a server asks of its transport when it binds: where the cache's files live and its
/// name. A transport that needs a file of its own (the Unix socket) derives its path from them.
#[derive(Clone, Debug)]
pub struct BindOptions {
    /// The directory of the connection file.
    pub dir: PathBuf,
    /// The cache's name.
    pub name: String,
}

/// A server-side transport: a listener and the connections it accepts, both non-blocking
/// and registrable with a [`mio::Poll`].
///
/// Contract: [`Transport::accept`] follows `accept(2)`: `WouldBlock` means the backlog is
/// drained; `PermissionDenied` means a connection arrived and was refused by the transport's
/// peer check (the caller just goes on accepting).
pub trait Transport: 'static {
    /// Which transport this is.
    const KIND: Kind;
    /// The listening socket.
    type Listener: mio::event::Source + Send + std::fmt::Debug;
    /// One accepted connection.
    type Conn: mio::event::Source + Read + Write + Send + std::fmt::Debug;

    /// Binds a listener and says where it listens.
    fn bind(options: &BindOptions) -> io::Result<(Self::Listener, Endpoint)>;
    /// Accepts one connection, already configured (options set, peer checked).
    fn accept(listener: &Self::Listener) -> io::Result<Self::Conn>;
    /// Removes what binding left on disk, if anything (the Unix socket file).
    fn unbind(endpoint: &Endpoint);
}

/// TCP on the loopback interface.
#[derive(Debug)]
pub struct Tcp;

impl Transport for Tcp {
    const KIND: Kind = Kind::Tcp;
    type Listener = mio::net::TcpListener;
    type Conn = mio::net::TcpStream;

    fn bind(_: &BindOptions) -> io::Result<(Self::Listener, Endpoint)> {
        let l = mio::net::TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))?;
        let addr = l.local_addr()?;
        Ok((l, Endpoint::Tcp(addr)))
    }

    fn accept(listener: &Self::Listener) -> io::Result<Self::Conn> {
        let (s, peer) = listener.accept()?;
        if !peer.ip().is_loopback() {
            return Err(io::ErrorKind::PermissionDenied.into());
        }
        s.set_nodelay(true)?;
        Ok(s)
    }

    fn unbind(_: &Endpoint) {}
}

/// A Unix domain socket file, mode 0600, peers limited to this user.
#[derive(Debug)]
pub struct Unix;

impl Transport for Unix {
    const KIND: Kind = Kind::Unix;
    type Listener = mio::net::UnixListener;
    type Conn = mio::net::UnixStream;

    fn bind(options: &BindOptions) -> io::Result<(Self::Listener, Endpoint)> {
        let path = &unix_socket_path(&options.dir, &options.name)?;
        // The caller owns the name (it holds the connection file's lock), so a socket file
        // here was left by a server that died: remove it.
        match std::fs::remove_file(path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        let l = mio::net::UnixListener::bind(path)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        Ok((l, Endpoint::Unix(path.to_owned())))
    }

    fn accept(listener: &Self::Listener) -> io::Result<Self::Conn> {
        let (s, _) = listener.accept()?;
        if peer_uid(s.as_raw_fd())? != current_uid() {
            return Err(io::ErrorKind::PermissionDenied.into());
        }
        Ok(s)
    }

    fn unbind(endpoint: &Endpoint) {
        if let Endpoint::Unix(p) = endpoint {
            let _ = std::fs::remove_file(p);
        }
    }
}

fn current_uid() -> u32 {
    // SAFETY: getuid has no preconditions and cannot fail.
    unsafe { libc::getuid() }
}

fn peer_uid(fd: RawFd) -> io::Result<u32> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `cred` and `len` are valid for writes of the sizes passed; the kernel writes at
    // most `len` bytes.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(cred.uid)
}

/// A blocking client-side connection. Reads and writes take `&self`, so one thread may read
/// while another writes.
#[derive(Debug)]
pub enum Stream {
    /// A TCP connection.
    Tcp(TcpStream),
    /// A Unix domain socket connection.
    Unix(UnixStream),
}

/// Connects to `endpoint`, giving up after `timeout`. The stream is blocking, with no read or
/// write timeout set.
pub fn connect(endpoint: &Endpoint, timeout: Duration) -> io::Result<Stream> {
    match endpoint {
        Endpoint::Tcp(addr) => {
            let s = TcpStream::connect_timeout(addr, timeout)?;
            s.set_nodelay(true)?;
            Ok(Stream::Tcp(s))
        }
        Endpoint::Unix(path) => Ok(Stream::Unix(UnixStream::connect(path)?)),
    }
}

macro_rules! both {
    ($self:ident, $s:ident => $e:expr) => {
        match $self {
            Stream::Tcp($s) => $e,
            Stream::Unix($s) => $e,
        }
    };
}

impl Stream {
    /// Reads into `buf` (see [`Read::read`]).
    pub fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        both!(self, s => (&*s).read(buf))
    }
    /// Writes from `bufs` (see [`Write::write_vectored`]).
    pub fn write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        both!(self, s => (&*s).write_vectored(bufs))
    }
    /// Writes all of `buf`.
    pub fn write_all(&self, buf: &[u8]) -> io::Result<()> {
        both!(self, s => (&*s).write_all(buf))
    }
    /// Sets or clears a timeout on blocking reads and writes.
    pub fn set_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        both!(self, s => { s.set_read_timeout(t)?; s.set_write_timeout(t) })
    }
    /// Switches non-blocking mode.
    pub fn set_nonblocking(&self, on: bool) -> io::Result<()> {
        both!(self, s => s.set_nonblocking(on))
    }
    /// Shuts both directions down, waking any thread blocked on this stream.
    pub fn shutdown(&self) -> io::Result<()> {
        both!(self, s => s.shutdown(std::net::Shutdown::Both))
    }
}

impl Read for &Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        Stream::read(self, buf)
    }
}

impl Write for &Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        both!(self, s => (&*s).write(buf))
    }
    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        Stream::write_vectored(self, bufs)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl AsRawFd for Stream {
    fn as_raw_fd(&self) -> RawFd {
        both!(self, s => s.as_raw_fd())
    }
}

/// The longest path a Unix socket address can hold on this platform, less its terminator.
const UNIX_PATH_MAX: usize = 107;

/// The socket path of cache `name` in `dir`: `upcache-<name>.sock` beside the connection
/// file, or, when that is too long for a socket address, `upcache-<64-bit hash of name>.sock`.
pub fn unix_socket_path(dir: &Path, name: &str) -> io::Result<PathBuf> {
    let fits = |p: &Path| p.as_os_str().len() <= UNIX_PATH_MAX;
    let p = dir.join(format!("upcache-{name}.sock"));
    if fits(&p) {
        return Ok(p);
    }
    // FNV-1a: stable across processes and versions, unlike the std hasher.
    let h = name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
    });
    let p = dir.join(format!("upcache-{h:016x}.sock"));
    if fits(&p) {
        return Ok(p);
    }
    Err(io::Error::new(
        io::ErrorKind::InvalidInput,
        format!(
            "{} is too long for a Unix socket; choose a shorter directory",
            p.display()
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip<T: Transport>(options: &BindOptions) {
        let (listener, endpoint) = T::bind(options).unwrap();
        assert_eq!(endpoint.kind(), T::KIND);
        let client = connect(&endpoint, Duration::from_secs(1)).unwrap();
        // Non-blocking accept: the connection is queued by the time connect returns.
        let mut conn = loop {
            match T::accept(&listener) {
                Ok(c) => break c,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::yield_now(),
                Err(e) => panic!("accept: {e}"),
            }
        };
        client.write_all(b"ping").unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 16];
        while got.len() < 4 {
            match conn.read(&mut buf) {
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::yield_now(),
                Err(e) => panic!("read: {e}"),
            }
        }
        assert_eq!(got, b"ping");
        T::unbind(&endpoint);
    }

    #[test]
    fn tcp_listens_on_loopback_and_round_trips() {
        let opts = BindOptions {
            dir: std::env::temp_dir(),
            name: "t".into(),
        };
        let (_, ep) = Tcp::bind(&opts).unwrap();
        match ep {
            Endpoint::Tcp(a) => assert!(a.ip().is_loopback()),
            other => panic!("unexpected {other:?}"),
        }
        round_trip::<Tcp>(&opts);
    }

    #[test]
    fn endpoints_and_kinds_round_trip_through_text() {
        for ep in [
            Endpoint::Tcp("127.0.0.1:4000".parse().unwrap()),
            Endpoint::Unix("/tmp/a b.sock".into()),
        ] {
            assert_eq!(Endpoint::parse(&ep.to_string()), Some(ep.clone()));
            assert_eq!(Kind::from_name(ep.kind().name()), Some(ep.kind()));
        }
        assert_eq!(Endpoint::parse("udp://x"), None);
        assert_eq!(Endpoint::parse("unix://"), None);
        let long = "n".repeat(128);
        let p = unix_socket_path(Path::new("/tmp"), &long).unwrap();
        assert!(p.as_os_str().len() <= UNIX_PATH_MAX);
        assert_eq!(
            p,
            unix_socket_path(Path::new("/tmp"), &long).unwrap(),
            "stable"
        );
        assert!(unix_socket_path(&Path::new("/").join("d".repeat(200)), "x").is_err());
    }

    #[test]
    fn unix_socket_is_private_and_removed_on_unbind() {
        let dir =
            std::env::temp_dir().join(format!("upcache-transport-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("upcache-s.sock");
        std::fs::write(&path, b"stale").unwrap(); // a stale file is replaced
        let opts = BindOptions {
            dir: dir.clone(),
            name: "s".into(),
        };
        let (l, ep) = Unix::bind(&opts).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        drop(l);
        Unix::unbind(&ep);
        assert!(!path.exists());
        round_trip::<Unix>(&opts);
        assert!(!path.exists());
        let _ = std::fs::remove_dir(&dir);
    }
}
