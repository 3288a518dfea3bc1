//! Which library inflates deflated data, behind one small interface.
//!
//! The default build inflates with zlib-rs (through `flate2`), pure Rust. The `isal` feature adds
//! ISA-L's igzip (`format::isal`), which inflated the vendor's base64-heavy exports in about 0.7x
//! zlib-rs's time (issue 16 item 3), and makes it the default. Both MUST give the same bytes and
//! the same failures for every input: the ZIP reader (`container`) and the gzip reader (`gzip`)
//! turn what an [`Engine`] reports into the same errors whichever it is, and the fuzz target
//! `inflate` feeds both the same inputs and compares.

use std::io;

/// The library that inflates ZIP and gzip members.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inflater {
    /// zlib-rs, pure Rust (the default build's only inflater).
    ZlibRs,
    /// ISA-L's igzip, the system's libisal (feature `isal`).
    #[cfg(feature = "isal")]
    Isal,
}

impl Inflater {
    /// The inflater this build uses: ISA-L when built with the `isal` feature, else zlib-rs.
    #[cfg(feature = "isal")]
    pub const DEFAULT: Inflater = Inflater::Isal;
    /// The inflater this build uses: ISA-L when built with the `isal` feature, else zlib-rs.
    #[cfg(not(feature = "isal"))]
    pub const DEFAULT: Inflater = Inflater::ZlibRs;

    /// Every inflater this build has.
    pub const ALL: &'static [Inflater] = &[
        Inflater::ZlibRs,
        #[cfg(feature = "isal")]
        Inflater::Isal,
    ];
}

/// The one way two inflaters' outputs for the same input may differ. After a complete stream
/// they are the same bytes. Before a failure (the same failure, with the same message) each is a
/// prefix of the stream's bytes, and one may stop a few bytes short of the other: zlib decodes
/// every symbol whose bits have arrived, while ISA-L may wait for more bits than one symbol's
/// before decoding it. Those bytes are the stream's own either way, so at most one row fewer is
/// released before the failure, never a wrong one.
pub fn same_output(a: &[u8], b: &[u8], complete: bool) -> bool {
    if complete {
        a == b
    } else {
        let n = a.len().min(b.len());
        a[..n] == b[..n]
    }
}

/// What one call of [`Engine::run`] did.
#[derive(Debug, Clone, Copy)]
pub struct Step {
    /// Input bytes taken (the engine may hold some of them for later).
    pub consumed: usize,
    /// Output bytes written at the start of the output buffer.
    pub produced: usize,
    /// The deflate stream ended (and, for a gzip body, its trailer matched).
    pub end: bool,
}

/// A streaming raw-deflate inflater.
pub trait Engine: Send {
    /// Inflate from `input` into `output`. Invalid data is an `InvalidData` error that
    /// `container::read_error` reports as invalid compressed data.
    fn run(&mut self, input: &[u8], output: &mut [u8]) -> io::Result<Step>;
}

/// zlib-rs through `flate2`, raw deflate (no zlib or gzip wrapper).
pub struct ZlibRs(flate2::Decompress);

impl ZlibRs {
    /// A fresh inflater for one raw deflate stream.
    pub fn new() -> ZlibRs {
        ZlibRs(flate2::Decompress::new(false))
    }
}

impl Default for ZlibRs {
    fn default() -> ZlibRs {
        ZlibRs::new()
    }
}

impl Engine for ZlibRs {
    #[inline]
    fn run(&mut self, input: &[u8], output: &mut [u8]) -> io::Result<Step> {
        let (in_before, out_before) = (self.0.total_in(), self.0.total_out());
        let status = self
            .0
            .decompress(input, output, flate2::FlushDecompress::None)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        Ok(Step {
            consumed: (self.0.total_in() - in_before) as usize,
            produced: (self.0.total_out() - out_before) as usize,
            end: status == flate2::Status::StreamEnd,
        })
    }
}
