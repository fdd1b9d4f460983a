//! The public error type, and how server error codes map onto it.

use std::fmt;
use std::io;
use std::path::PathBuf;

use crate::protocol::{DecodeError, ErrorCode};

/// Why a cache name is not valid (the `reason` of [`Error::InvalidName`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NameError {
    /// Names are 1 to 128 characters long; this one has this many.
    Length(usize),
    /// Names are made of `[A-Za-z0-9_-]`; this is the first character that is not.
    Char(char),
}

impl fmt::Display for NameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NameError::Length(n) => {
                write!(f, "{n} characters, names are 1 to 128 characters long")
            }
            NameError::Char(c) => write!(f, "{c:?} is not allowed, use only A-Z a-z 0-9 _ -"),
        }
    }
}

impl std::error::Error for NameError {}

/// Everything that can go wrong, with what to do about it in the message.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// The cache name is not 1–128 characters of `[A-Za-z0-9_-]`.
    InvalidName {
        /// The name given.
        name: String,
        /// What is wrong with it.
        reason: NameError,
    },
    /// A builder option outside what the protocol allows, such as a `max_value_len` over
    /// [`crate::protocol::MAX_VALUE_LEN_CAP`].
    InvalidOption {
        /// The option.
        option: &'static str,
        /// What is wrong with it.
        detail: String,
    },
    /// A TTL of zero, or over [`crate::protocol::MAX_TTL_MS`] ms (checked before sending).
    InvalidTtl {
        /// The TTL given.
        ttl: std::time::Duration,
    },
    /// A key longer than the limit (checked before sending).
    KeyTooLarge {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A value longer than the server's limit (checked before sending).
    ValueTooLarge {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A value too large for the server's memory budget: its record would take more than
    /// half of it ([`Builder::max_memory`](crate::Builder::max_memory)). Nothing was stored
    /// and nothing evicted; the handle goes on working.
    OverBudget {
        /// The server's budget in bytes.
        max_memory: u64,
    },
    /// `incr`/`decr` on a value that is not an ASCII decimal i64. The value is unchanged.
    NotAnInteger,
    /// `incr`/`decr` would overflow an i64. The value is unchanged.
    Overflow,
    /// The server went away (killed, crashed, or shut down). Every later call on this handle
    /// fails the same way; open the cache again to elect a new server.
    ServerGone {
        /// The cache name.
        name: String,
    },
    /// The server did not take a request or send its reply within the request timeout
    /// (see `Builder::request_timeout`): it is alive but stuck. The connection is closed;
    /// later calls on this handle fail too. Reopen to try again.
    Timeout {
        /// The cache name.
        name: String,
        /// The timeout that passed.
        after: std::time::Duration,
    },
    /// Opening did not reach a working server in time.
    OpenTimedOut {
        /// The cache name.
        name: String,
        /// The connection file.
        path: PathBuf,
        /// What was last seen.
        detail: String,
    },
    /// Another program serves this name: the connection file holds its `{"port": N}` (the
    /// format of the Python upcache, which uses the same file name) and that port accepts
    /// connections. The file is left alone; starting a second server would split the cache.
    ForeignServer {
        /// The cache name.
        name: String,
        /// The connection file.
        path: PathBuf,
        /// The port that program listens on.
        port: u16,
    },
    /// No server runs for this name, and the open was told not to start one
    /// ([`Builder::join_only`](crate::Builder::join_only)).
    NoServer {
        /// The cache name.
        name: String,
        /// The connection file that was looked for.
        path: PathBuf,
    },
    /// This process won the election but could not start the server process, or the server
    /// failed before it listened. The connection file was removed, so the next open tries again.
    ServerStart {
        /// The cache name.
        name: String,
        /// What happened.
        detail: String,
    },
    /// The server at the address in the connection file refused the handshake, or did not
    /// speak upcache.
    Handshake {
        /// The cache name.
        name: String,
        /// What happened.
        detail: String,
    },
    /// The server speaks another protocol version.
    VersionMismatch {
        /// The server's version.
        server: u64,
        /// Ours.
        client: u64,
    },
    /// The server sent bytes that are not a valid reply. The connection is closed.
    Protocol(DecodeError),
    /// The server sent a well-formed reply that does not answer the request (another kind of
    /// reply than the request expects, or `stats` that are not the JSON object of
    /// [`ServerStats`](crate::ServerStats)): a server of another upcache version, or a bug.
    UnexpectedReply {
        /// The cache name.
        name: String,
        /// What was expected, and what came.
        detail: String,
    },
    /// The server answered with an error this call did not expect.
    Server {
        /// The server's code.
        code: ErrorCode,
        /// The server's message.
        message: String,
    },
    /// An operating-system error.
    Io {
        /// What was being done.
        context: &'static str,
        /// The error.
        source: io::Error,
    },
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

// Errors cross threads and end up in `Box<dyn Error + Send + Sync>` (anyhow and the like).
const _: () = {
    const fn error_type<T: std::error::Error + Send + Sync + 'static>() {}
    error_type::<Error>();
    error_type::<NameError>();
};

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::InvalidName { name, reason } => {
                write!(f, "invalid cache name {name:?}: {reason}")
            }
            Error::InvalidTtl { ttl } => write!(
                f,
                "invalid TTL of {ttl:?}: a TTL is 1 ms to {} ms (about 34 years)",
                crate::protocol::MAX_TTL_MS
            ),
            Error::InvalidOption { option, detail } => {
                write!(f, "invalid option `{option}`: {detail}")
            }
            Error::KeyTooLarge { len, max } => {
                write!(f, "key of {len} bytes is over the limit of {max} bytes")
            }
            Error::ValueTooLarge { len, max } => write!(
                f,
                "value of {len} bytes is over this server's limit of {max} bytes \
                 (set a larger limit with `UpCache::builder(..).max_value_len(..)` when the \
                 server is first started)"
            ),
            Error::OverBudget { max_memory } => write!(
                f,
                "value too large for this server's memory budget of {max_memory} bytes (a \
                 record may take at most half of it; set a larger budget with \
                 `UpCache::builder(..).max_memory(..)` when the server is first started)"
            ),
            Error::NotAnInteger => {
                write!(
                    f,
                    "the stored value is not a decimal 64-bit integer; it was left unchanged"
                )
            }
            Error::Overflow => write!(
                f,
                "the increment would overflow a 64-bit integer; the value was left unchanged"
            ),
            Error::ServerGone { name } => write!(
                f,
                "the cache server for `{name}` went away; reopen to elect a new one"
            ),
            Error::Timeout { name, after } => write!(
                f,
                "the cache server for `{name}` did not answer within {after:?}; the connection \
                 was closed, reopen to try again"
            ),
            Error::OpenTimedOut { name, path, detail } => write!(
                f,
                "could not open cache `{name}` in time ({detail}); connection file {}",
                path.display()
            ),
            Error::ForeignServer { name, path, port } => write!(
                f,
                "another program (perhaps the Python upcache) serves cache `{name}` on port \
                 {port}: its connection file {} is not upcache's. Use another name or directory, \
                 or stop that program; if nothing should listen on that port, remove the file",
                path.display()
            ),
            Error::NoServer { name, path } => write!(
                f,
                "no server runs for cache `{name}` (no live connection file {}); open it \
                 without `join_only` (or run `upcache serve {name}`) to start one",
                path.display()
            ),
            Error::ServerStart { name, detail } => {
                write!(f, "could not start the cache server for `{name}`: {detail}")
            }
            Error::Handshake { name, detail } => write!(
                f,
                "the server in the connection file of `{name}` is not a working upcache server: \
                 {detail}"
            ),
            Error::VersionMismatch { server, client } => write!(
                f,
                "the server speaks protocol version {server}, this client speaks {client}; \
                 stop the old server or use a matching upcache version"
            ),
            Error::Protocol(e) => write!(f, "the server sent an invalid frame: {e}"),
            Error::UnexpectedReply { name, detail } => write!(
                f,
                "the cache server for `{name}` sent a reply this client does not understand \
                 ({detail}); is it running the same upcache version?"
            ),
            Error::Server { code, message } => {
                write!(f, "the server refused the request: {code}")?;
                if !message.is_empty() {
                    write!(f, " ({message})")?;
                }
                Ok(())
            }
            Error::Io { context, source } => write!(f, "{context}: {source}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } => Some(source),
            Error::Protocol(e) => Some(e),
            _ => None,
        }
    }
}

impl Error {
    /// The error for a server error reply.
    pub(crate) fn from_reply(
        code: ErrorCode,
        arg: u64,
        message: &[u8],
        limits: (usize, usize),
    ) -> Self {
        match code {
            ErrorCode::NotAnInteger => Error::NotAnInteger,
            ErrorCode::Overflow => Error::Overflow,
            ErrorCode::VersionMismatch => Error::VersionMismatch {
                server: arg,
                client: crate::protocol::VERSION,
            },
            ErrorCode::KeyTooLarge => Error::KeyTooLarge {
                len: arg as usize,
                max: limits.0,
            },
            ErrorCode::ValueTooLarge => Error::ValueTooLarge {
                len: arg as usize,
                max: limits.1,
            },
            ErrorCode::OverBudget => Error::OverBudget { max_memory: arg },
            code => Error::Server {
                code,
                message: String::from_utf8_lossy(message).into_owned(),
            },
        }
    }

    pub(crate) fn io(context: &'static str) -> impl FnOnce(io::Error) -> Error {
        move |source| Error::Io { context, source }
    }

    /// Whether this error means the server is gone (so reopening may help).
    pub fn is_server_gone(&self) -> bool {
        matches!(self, Error::ServerGone { .. })
    }
}

/// Checks a cache name: 1–128 characters of `[A-Za-z0-9_-]`; length first, then the first bad
/// character, as in the original.
///
/// # Errors
///
/// [`Error::InvalidName`], whose `reason` says what is wrong.
pub fn validate_name(name: &str) -> Result<()> {
    let n = name.chars().count();
    let bad = |reason| {
        Err(Error::InvalidName {
            name: name.to_owned(),
            reason,
        })
    };
    if !(1..=128).contains(&n) {
        return bad(NameError::Length(n));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '-'))
    {
        return bad(NameError::Char(c));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(validate_name("TVHosts").is_ok());
        assert!(validate_name(&"a".repeat(128)).is_ok());
        assert!(validate_name("a-b_C9").is_ok());
        let err = |n: &str| match validate_name(n) {
            Err(Error::InvalidName { reason, .. }) => reason,
            other => panic!("{other:?}"),
        };
        assert_eq!(err(""), NameError::Length(0));
        assert_eq!(err(&"a".repeat(129)), NameError::Length(129));
        // Length is checked before characters.
        assert_eq!(err(&"/".repeat(129)), NameError::Length(129));
        assert_eq!(err("a/b c"), NameError::Char('/'));
        assert_eq!(err("é"), NameError::Char('é'));
    }

    #[test]
    fn messages_say_what_to_do() {
        let e = Error::ServerGone {
            name: "TVHosts".into(),
        };
        assert_eq!(
            e.to_string(),
            "the cache server for `TVHosts` went away; reopen to elect a new one"
        );
        assert!(Error::NotAnInteger.to_string().contains("unchanged"));
        let e = validate_name("a/b").unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid cache name \"a/b\": '/' is not allowed, use only A-Z a-z 0-9 _ -"
        );
        let e = validate_name("").unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid cache name \"\": 0 characters, names are 1 to 128 characters long"
        );
    }
}
