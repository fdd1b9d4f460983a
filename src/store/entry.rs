//! [`Entry`]: a key and its value in one allocation, shared by reference count.
//!
//! Layout: a 4-byte reference count, the 4-byte key length, then the key bytes and the value
//! bytes. The total length lives in the handle, not the allocation, so a 16-byte key with a
//! 64-byte value takes 88 bytes (one 96-byte malloc chunk; an `Arc<[u8]>` with its two 8-byte
//! counts would take 112).
//!
//! The count is not atomic: entries live on the server's one thread (the store and the output
//! queues that send values without copying them). `Entry` holds a raw pointer, so it is neither
//! `Send` nor `Sync`, and the compiler keeps it on that thread.

use std::alloc::{alloc, dealloc, handle_alloc_error, Layout};
use std::fmt;
use std::ptr::NonNull;

const HEADER: usize = 8;

/// A stored key and value. Cloning increments a count; the bytes are freed with the last clone.
pub struct Entry {
    ptr: NonNull<u8>,
    /// Key and value bytes, not counting the header.
    len: u32,
}

impl Entry {
    fn layout(len: usize) -> Layout {
        Layout::from_size_align(HEADER + len, 4).expect("entry size fits a layout")
    }

    /// A new entry holding copies of `key` and `value`.
    ///
    /// Panics if key and value together exceed `u32::MAX` bytes (the protocol's limits keep
    /// them far below).
    pub fn new(key: &[u8], value: &[u8]) -> Self {
        let len = key.len() + value.len();
        let len32 = u32::try_from(len).expect("entry fits in u32 bytes");
        let key_len = key.len() as u32;
        let layout = Self::layout(len);
        // SAFETY: the layout has a non-zero size (at least the header).
        let raw = unsafe { alloc(layout) };
        let Some(ptr) = NonNull::new(raw) else {
            handle_alloc_error(layout)
        };
        // SAFETY: the allocation is HEADER + len bytes, aligned to 4: the two u32 header words
        // are in bounds and aligned, and key and value fit after them without overlapping the
        // sources (a fresh allocation).
        unsafe {
            ptr.as_ptr().cast::<u32>().write(1);
            ptr.as_ptr().add(4).cast::<u32>().write(key_len);
            std::ptr::copy_nonoverlapping(key.as_ptr(), ptr.as_ptr().add(HEADER), key.len());
            std::ptr::copy_nonoverlapping(
                value.as_ptr(),
                ptr.as_ptr().add(HEADER + key.len()),
                value.len(),
            );
        }
        Entry { ptr, len: len32 }
    }

    fn count(&self) -> *mut u32 {
        self.ptr.as_ptr().cast::<u32>()
    }

    fn key_len(&self) -> usize {
        // SAFETY: the header was written at creation and is never changed.
        unsafe { self.ptr.as_ptr().add(4).cast::<u32>().read() as usize }
    }

    /// Key then value.
    pub fn bytes(&self) -> &[u8] {
        // SAFETY: `len` bytes after the header were initialised at creation and are never
        // written again; the allocation lives at least as long as `self`.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr().add(HEADER), self.len as usize) }
    }

    /// Length of key and value together.
    pub fn len(&self) -> usize {
        self.len as usize
    }

    /// Whether key and value are both empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The key.
    pub fn key(&self) -> &[u8] {
        &self.bytes()[..self.key_len()]
    }

    /// The value.
    pub fn value(&self) -> &[u8] {
        &self.bytes()[self.key_len()..]
    }

    /// The whole shared bytes (key then value) and where the value starts, for zero-copy
    /// writes: a queue keeps a clone and sends a range of [`Entry::bytes`].
    pub fn shared(&self) -> (&Entry, usize) {
        (self, self.key_len())
    }
}

impl Clone for Entry {
    fn clone(&self) -> Self {
        // SAFETY: the count is in bounds and only touched on this thread (`Entry` is !Send
        // and !Sync).
        unsafe {
            let c = self.count();
            // More clones than u32 counts would need more memory than exists: abort, as Rc does.
            if *c == u32::MAX {
                std::process::abort();
            }
            *c += 1;
        }
        Entry {
            ptr: self.ptr,
            len: self.len,
        }
    }
}

impl Drop for Entry {
    fn drop(&mut self) {
        // SAFETY: as in `clone`; the last handle frees the allocation with the layout it was
        // made with (same `len`).
        unsafe {
            let c = self.count();
            *c -= 1;
            if *c == 0 {
                dealloc(self.ptr.as_ptr(), Self::layout(self.len as usize));
            }
        }
    }
}

impl fmt::Debug for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Entry")
            .field("key", &String::from_utf8_lossy(self.key()))
            .field("value_len", &self.value().len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_key_and_value_and_shares_them() {
        let e = Entry::new(b"key", b"value");
        assert_eq!(
            (e.key(), e.value(), e.bytes()),
            (&b"key"[..], &b"value"[..], &b"keyvalue"[..])
        );
        let c = e.clone();
        drop(e);
        assert_eq!(c.value(), b"value");
        let empty = Entry::new(b"", b"");
        assert!(empty.key().is_empty() && empty.value().is_empty());
        assert_eq!(std::mem::size_of::<Option<Entry>>(), 16);
    }
}
