//! The code bytes: request opcodes, push kinds, wake reasons and error codes.

use std::fmt;

macro_rules! codes {
    ($(#[$m:meta])* $vis:vis enum $name:ident { $($(#[$vm:meta])* $v:ident = $n:expr,)* }) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[repr(u8)]
        $vis enum $name { $($(#[$vm])* $v = $n,)* }
        impl $name {
            /// Every code, in order.
            pub const ALL: &'static [$name] = &[$($name::$v,)*];
            /// The code for a byte, if it is one.
            pub fn from_u8(b: u8) -> Option<Self> {
                match b { $($n => Some($name::$v),)* _ => None }
            }
        }
    };
}

codes! {
    /// Request opcodes (byte 3 of a request).
    pub enum Op {
        /// Handshake: key = token, arg = protocol version. Must be the first request; a later
        /// one is answered with the version and changes nothing.
        Hello = 0x01,
        /// key → value or nil.
        Get = 0x02,
        /// key, value → done.
        Set = 0x03,
        /// key → bool.
        Exists = 0x04,
        /// key → bool (whether it existed).
        Remove = 0x05,
        /// key, arg = delta (i64) → int, the new value.
        Incr = 0x06,
        /// → done.
        Clear = 0x07,
        /// → uint, the number of keys.
        Count = 0x08,
        /// arg = cursor → chunk of keys.
        Keys = 0x09,
        /// arg = cursor → chunk of items.
        Items = 0x0a,
        /// key, arg = timeout ms → done; later a `Woken` push with this request's id.
        Wait = 0x0b,
        /// key, value, arg = timeout ms → done or bool(true); as `Wait`, for a value.
        WaitValue = 0x0c,
        /// key → uint, a subscription id ([`super::SubId`], at most `u32::MAX`).
        Subscribe = 0x0d,
        /// → uint, a subscription id for every key (as `Subscribe`).
        SubscribeAll = 0x0e,
        /// arg = subscription id (at most `u32::MAX`) → done.
        Unsubscribe = 0x0f,
        /// → text (JSON counters).
        Stats = 0x10,
        /// → done; the server then exits.
        Shutdown = 0x11,
        /// → done.
        Ping = 0x12,
        /// key, value, arg = TTL in ms (1 ..= [`MAX_TTL_MS`](super::MAX_TTL_MS)) → done:
        /// stores the value and gives the key that TTL.
        SetTtl = 0x13,
        /// key, arg = TTL in ms → bool: gives an existing key that TTL (false: no such key).
        Expire = 0x14,
        /// key → bool: takes the key's TTL away (false: no such key, or it had none).
        Persist = 0x15,
        /// key → nil (no such key), or uint: ms left, at least 1 ([`NO_TTL`](super::NO_TTL)
        /// for a key without a TTL).
        Ttl = 0x16,
        /// key → nil, or versioned: the value and (arg) its version.
        GetVersioned = 0x17,
        /// key, value, arg = version → version (the new one), or nil: the key is missing or
        /// holds another version, and nothing changed. Keeps the key's TTL.
        SetIfVersion = 0x18,
        /// key, value, arg = TTL in ms or 0 for none → version, or nil: the key is present and
        /// nothing changed.
        Add = 0x19,
        /// key, value, arg = TTL in ms or 0 to keep the key's → version, or nil: the key is
        /// missing and nothing changed.
        Replace = 0x1a,
        /// value = a batch of keys, arg = their count → values, one per key in order.
        GetMany = 0x1b,
        /// key = empty or a TTL in ms (8 bytes LE, not 0), value = a batch of pairs, arg =
        /// their count → done: each pair stored in order, as `SET` (or `SET_TTL`).
        SetMany = 0x1c,
        /// value = a batch of keys, arg = their count → uint, how many were removed.
        RemoveMany = 0x1d,
        /// key, arg = lease timeout in ms (1 ..= [`MAX_TTL_MS`](super::MAX_TTL_MS)) → value
        /// (the key is present), leased (the caller holds the key's lease: compute and store),
        /// or waiting (later a `LeaseValue` or `LeaseGranted` push with this request's id).
        GetOrLease = 0x20,
        /// key, arg = the id of the `GetOrLease` request that got the lease (at most
        /// `u32::MAX`) → bool: true if this connection held that lease, which now passes to the
        /// next waiter (or ends).
        Release = 0x21,
    }
}

codes! {
    /// Push kinds (byte 3 of a push).
    pub enum PushKind {
        /// key was set (or incremented) to value. id = subscription.
        Set = 0x01,
        /// key was removed. id = subscription.
        Removed = 0x02,
        /// every key was removed. id = subscription.
        Cleared = 0x03,
        /// arg events for this subscription were dropped. id = subscription.
        Lagged = 0x04,
        /// A wait ended. id = the wait request's id; arg = a [`WakeReason`].
        Woken = 0x05,
        /// The subscription ended (server shutting down). id = subscription.
        Closed = 0x06,
        /// key expired (its TTL ran out) and was removed. id = subscription.
        Expired = 0x07,
        /// The value a waiting `GetOrLease` waited for: someone stored the key. id = that
        /// request's id; value = the stored value; no key.
        LeaseValue = 0x09,
        /// The lease a waiting `GetOrLease` waited for is now this request's: compute and store
        /// the value (or release it). id = that request's id; no fields.
        LeaseGranted = 0x0a,
        /// key was evicted to keep the store within its memory budget. id = subscription.
        Evicted = 0x08,
    }
}

codes! {
    /// Why a wait ended (`arg` of a `Woken` push).
    pub enum WakeReason {
        /// The deadline passed.
        TimedOut = 0,
        /// The awaited event happened: the key changed (`WAIT`) or now holds the value
        /// (`WAIT_VALUE`).
        Event = 1,
        /// The server is shutting down.
        Shutdown = 2,
        /// A `CLEAR` ended the wait (every wait on the server ends at a clear). A wait for a
        /// value ended this way did not see its value: the key no longer holds anything.
        Cleared = 3,
    }
}

codes! {
    /// Error codes of an error reply (byte 3 of a reply, 0x40 and up). The value field holds a
    /// UTF-8 message for people; the code is what programs match on.
    pub enum ErrorCode {
        /// The stored value is not a decimal i64.
        NotAnInteger = 0x40,
        /// The increment would overflow an i64.
        Overflow = 0x41,
        /// A key over the server's limit (the connection is then closed).
        KeyTooLarge = 0x42,
        /// A value over the server's limit (the connection is then closed).
        ValueTooLarge = 0x43,
        /// An opcode this server does not know; the connection goes on.
        UnknownOp = 0x44,
        /// Bytes that are not a frame (the connection is then closed).
        BadFrame = 0x45,
        /// The handshake token was wrong or missing (the connection is then closed).
        Unauthorized = 0x46,
        /// The client's protocol version is not this server's (arg = the server's version).
        VersionMismatch = 0x47,
        /// Reserved: this server version never sends it (at shutdown it ends waits with
        /// `Woken`/[`WakeReason::Shutdown`], subscriptions with `Closed`, then closes).
        ShuttingDown = 0x48,
        /// No such subscription on this connection.
        NoSuchSubscription = 0x49,
        /// A per-connection limit was reached (waits, subscriptions).
        Busy = 0x4a,
        /// A TTL of 0 or over [`MAX_TTL_MS`](super::MAX_TTL_MS); nothing changed and the
        /// connection goes on.
        BadTtl = 0x4b,
        /// A `GET_MANY` reply would be longer than the server's longest value (`max_value`);
        /// nothing changed and the connection goes on.
        ReplyTooLarge = 0x4c,
        /// A multi-key request with more than [`MAX_BATCH_KEYS`](super::MAX_BATCH_KEYS)
        /// entries; nothing changed and the connection goes on.
        BatchTooLarge = 0x4d,
        /// A value whose record would take more than half the server's memory budget (arg =
        /// the budget in bytes); nothing was stored or evicted and the connection goes on.
        OverBudget = 0x51,
    }
}

impl ErrorCode {
    /// What the code means, for people (error replies carry it as their message).
    pub fn message(self) -> &'static str {
        match self {
            ErrorCode::NotAnInteger => "value is not a decimal 64-bit integer",
            ErrorCode::Overflow => "increment would overflow a 64-bit integer",
            ErrorCode::KeyTooLarge => "key too large",
            ErrorCode::ValueTooLarge => "value too large",
            ErrorCode::UnknownOp => "unknown operation",
            ErrorCode::BadFrame => "bad frame",
            ErrorCode::Unauthorized => "wrong or missing token",
            ErrorCode::VersionMismatch => "protocol version mismatch",
            ErrorCode::ShuttingDown => "server shutting down",
            ErrorCode::NoSuchSubscription => "no such subscription",
            ErrorCode::Busy => "too many waits or subscriptions on this connection",
            ErrorCode::BadTtl => "a TTL must be 1 ms to 2^40 - 1 ms (about 34 years)",
            ErrorCode::ReplyTooLarge => {
                "the values asked for are longer together than the server's longest value"
            }
            ErrorCode::BatchTooLarge => "a multi-key request holds at most 65,536 keys",
            ErrorCode::OverBudget => {
                "value too large for the server's memory budget (a record may take half of it)"
            }
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message())
    }
}
