//! ISA-L's igzip inflater (feature `isal`, issue 16 item 3): the only FFI of the crate's own.
//!
//! Why: on the vendor's exports (deflated base64) igzip inflates in about 0.7x zlib-rs's time, and
//! inflating is the one stage every row waits for. Which ISA-L: the system's (Debian's
//! `libisal-dev`, a shared `libisal.so.2`), declared by the `isal-sys` crate with its
//! `use-system-isal` feature, which builds nothing (building ISA-L from source would need nasm
//! and autotools on every machine that builds the tool). The declarations were generated from a
//! newer header (2.31) than Debian's (2.30): `struct inflate_state` is the same in both, and it
//! cannot change within the library's ABI (soname 2), since the caller allocates it.
//!
//! The state lives on the heap (about 90 KiB) and is handed input and output slices for one call
//! at a time: the pointers into them are set right before `isal_inflate` and cleared right after,
//! so the state never holds a pointer between calls. ISA-L keeps the 32 KiB of history it needs in
//! its own buffer.

use std::io;

use isal_sys::igzip_lib as ffi;

use crate::format::inflate::{Engine, Step};

/// What the inflater reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wrapper {
    /// A raw deflate stream (a ZIP member).
    Raw,
    /// A gzip member's deflate stream followed by its 8-byte trailer (CRC-32 and length), which
    /// ISA-L checks; its header is read by the caller (`gzip`).
    GzipBody,
}

/// Invalid deflate data, as ISA-L reports it (carried inside an `io::Error`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidDeflate {
    /// ISA-L's return code (`ISAL_INVALID_BLOCK`, `_SYMBOL`, `_LOOKBACK`).
    pub code: i32,
}

impl std::fmt::Display for InvalidDeflate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "corrupt deflate stream (ISA-L code {})", self.code)
    }
}

impl std::error::Error for InvalidDeflate {}

/// One stream's ISA-L inflate state.
pub struct Isal {
    state: Box<ffi::inflate_state>,
    /// A failure to report on the next call, after the bytes that came before it.
    pending: Option<io::Error>,
}

// SAFETY: the state's raw pointers (`next_in`, `next_out`) are set by `run` for the duration of
// one `isal_inflate` call and reset to null before it returns, so an `Isal` never points into
// memory it does not own and may move to another thread; ISA-L keeps no thread-local state.
#[allow(unsafe_code)]
unsafe impl Send for Isal {}

impl Isal {
    /// A fresh state for one stream of `wrapper`.
    pub fn new(wrapper: Wrapper) -> Isal {
        // All zeros is a valid `inflate_state` (integers, arrays of them, null pointers); the
        // zeroed allocation is then initialised by ISA-L itself. Allocated in place: the state is
        // about 90 KiB, too much to build on a thread's stack and move.
        let layout = std::alloc::Layout::new::<ffi::inflate_state>();
        #[allow(unsafe_code)]
        // SAFETY: the layout is that of `inflate_state`, whose size is not zero.
        let ptr = unsafe { std::alloc::alloc_zeroed(layout) }.cast::<ffi::inflate_state>();
        if ptr.is_null() {
            std::alloc::handle_alloc_error(layout);
        }
        #[allow(unsafe_code)]
        // SAFETY: `ptr` was allocated by the global allocator with `inflate_state`'s layout and is
        // owned by nothing else; its zero bytes are a valid `inflate_state`, since every field is
        // an integer, an array of integers, an integer-sized enum or a raw pointer.
        let mut state = unsafe { Box::from_raw(ptr) };
        #[allow(unsafe_code)]
        // SAFETY: `state` is a valid, exclusively borrowed `inflate_state`; `isal_inflate_init`
        // only writes its fields.
        unsafe {
            ffi::isal_inflate_init(&mut *state)
        };
        state.crc_flag = match wrapper {
            Wrapper::Raw => ffi::ISAL_DEFLATE,
            Wrapper::GzipBody => ffi::ISAL_GZIP_NO_HDR_VER,
        };
        Isal {
            state,
            pending: None,
        }
    }

    /// The deflate data has ended and the gzip trailer is being read (`Wrapper::GzipBody`).
    pub fn in_trailer(&self) -> bool {
        self.state.block_state == ffi::isal_block_state_ISAL_CHECKSUM_CHECK
    }
}

impl Engine for Isal {
    fn run(&mut self, input: &[u8], output: &mut [u8]) -> io::Result<Step> {
        if let Some(e) = self.pending.take() {
            return Err(e);
        }
        // ISA-L counts in u32: hand it at most that much per call.
        let in_len = input.len().min(u32::MAX as usize);
        let out_len = output.len().min(u32::MAX as usize);
        let s = &mut *self.state;
        // ISA-L only reads through `next_in`; its field is not `const` in C.
        s.next_in = input.as_ptr().cast_mut();
        s.avail_in = in_len as u32;
        s.next_out = output.as_mut_ptr();
        s.avail_out = out_len as u32;
        #[allow(unsafe_code)]
        // SAFETY: `s` is an initialised state (`new`); `next_in`/`avail_in` describe `input`,
        // readable for the call, and `next_out`/`avail_out` describe `output`, writable and not
        // aliased for the call; ISA-L reads and writes within those bounds only, and the pointers
        // are cleared below before the borrows end.
        let ret = unsafe { ffi::isal_inflate(s) };
        // After invalid data ISA-L's input count is not kept (it was seen to wrap below zero):
        // nothing is taken from it then but the error.
        let mut step = Step {
            consumed: in_len.saturating_sub(s.avail_in as usize),
            produced: out_len.saturating_sub(s.avail_out as usize),
            end: s.block_state == ffi::isal_block_state_ISAL_BLOCK_FINISH,
        };
        s.next_in = std::ptr::null_mut();
        s.avail_in = 0;
        s.next_out = std::ptr::null_mut();
        s.avail_out = 0;
        match ret {
            0.. => Ok(step),
            ffi::ISAL_INCORRECT_CHECKSUM => {
                // flate2's words for the same failure, reported as flate2 does: after every byte
                // of the member (a member inflated in one call would otherwise release none).
                let e = io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "corrupt gzip stream does not have a matching checksum",
                );
                if step.produced == 0 {
                    return Err(e);
                }
                self.pending = Some(e);
                step.end = false;
                Ok(step)
            }
            code => {
                // ISA-L decodes up to 64 KiB ahead into its own buffer before handing bytes out,
                // so invalid data can surface while bytes before it are still unread. They are
                // handed on first, as zlib-rs does, so that what comes first in the stream (say,
                // a member longer than it declares) is reported first (found by fuzz target
                // `inflate`).
                let e = io::Error::new(io::ErrorKind::InvalidData, InvalidDeflate { code });
                if step.produced == 0 {
                    return Err(e);
                }
                self.pending = Some(e);
                step.end = false;
                Ok(step)
            }
        }
    }
}
