//! Helpers shared by unit tests (compiled into test builds only).

use std::io::{self, Read};

/// A reader that hands out at most `step` bytes per read, to put buffer edges everywhere.
pub struct Trickle<'a> {
    /// What is left to hand out.
    pub data: &'a [u8],
    /// Bytes per read at most.
    pub step: usize,
}

impl Read for Trickle<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.step.min(buf.len()).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}
