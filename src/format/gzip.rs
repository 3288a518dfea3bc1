//! gzip read member by member, and what may follow the last member.
//!
//! A gzip file is a series of members (RFC 1952 section 2.2), each checked against its own CRC-32
//! and length. What follows the last one is where writers and readers part ways (issue 12 item 8):
//! tape and block devices, and some upload paths, pad a file with zero bytes to a block size, and
//! GNU gzip and Python's `gzip` both end quietly at them; anything else after the last member is
//! neither a member nor padding. Such bytes are not a truncated download either, so they get a
//! message of their own ([`TrailingData`]) instead of flate2's "invalid gzip header". Zero padding
//! followed by another member is refused as trailing data: GNU gzip stops at the padding and drops
//! the member while Python reads it, so the two disagree about what the file holds.
//!
//! The reader streams: it holds one input buffer and one inflate state, never the file.

use std::fmt;
use std::io::{self, BufRead, Read};

use flate2::bufread::GzDecoder;

use crate::format::inflate::Inflater;

/// The input buffer's size: the inflater reads straight out of it.
const BUFFER: usize = 256 * 1024;

/// The NDJSON of a gzip file: every member's data, in order. A member that is corrupt or cut
/// short fails as flate2 reports it (`InvalidInput`/`InvalidData`, `UnexpectedEof`), whichever
/// [`Inflater`] reads it; bytes after the last member that are not zero padding fail with an
/// `InvalidData` error holding a [`TrailingData`], after every byte of the members.
pub struct Members<R> {
    /// The member being read (or about to be); `None` past the last member and what followed it.
    member: Option<Member<R>>,
    inflater: Inflater,
}

impl<R: Read> Members<R> {
    /// Read the gzip file `raw` from its first byte, with this build's inflater.
    pub fn new(raw: R) -> Members<R> {
        Members::with(raw, Inflater::DEFAULT)
    }

    /// Read the gzip file `raw` from its first byte, with `inflater`.
    pub fn with(raw: R, inflater: Inflater) -> Members<R> {
        Members {
            member: Some(Member::new(Peek::new(raw), inflater)),
            inflater,
        }
    }
}

impl<R: Read> Read for Members<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        while let Some(decoder) = &mut self.member {
            let n = decoder.read(buf)?;
            if n > 0 {
                return Ok(n);
            }
            // The member ended and its CRC-32 and length matched. What follows it?
            self.member = match what_follows(decoder.source())? {
                Next::Member => self
                    .member
                    .take()
                    .map(|ended| Member::new(ended.into_source(), self.inflater)),
                Next::End => None,
            };
        }
        Ok(0)
    }
}

/// One gzip member, read by the chosen inflater.
// One member is alive at a time, and the default build has only the large variant: boxing it
// would cost the default build an indirection for nothing.
#[allow(clippy::large_enum_variant)]
enum Member<R> {
    Flate(GzDecoder<Peek<R>>),
    #[cfg(feature = "isal")]
    Isal(isal::GzMember<Peek<R>>),
}

impl<R: Read> Member<R> {
    fn new(source: Peek<R>, inflater: Inflater) -> Member<R> {
        match inflater {
            Inflater::ZlibRs => Member::Flate(GzDecoder::new(source)),
            #[cfg(feature = "isal")]
            Inflater::Isal => Member::Isal(isal::GzMember::new(source)),
        }
    }

    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Member::Flate(d) => d.read(buf),
            #[cfg(feature = "isal")]
            Member::Isal(d) => d.read(buf),
        }
    }

    /// The input, positioned after the member once it has ended.
    fn source(&mut self) -> &mut Peek<R> {
        match self {
            Member::Flate(d) => d.get_mut(),
            #[cfg(feature = "isal")]
            Member::Isal(d) => &mut d.source,
        }
    }

    fn into_source(self) -> Peek<R> {
        match self {
            Member::Flate(d) => d.into_inner(),
            #[cfg(feature = "isal")]
            Member::Isal(d) => d.source,
        }
    }
}

enum Next {
    Member,
    End,
}

/// Look past the end of a member: another member starts with gzip's magic bytes; the end of the
/// input, or zero bytes up to it, end the file; anything else is [`TrailingData`], counted to the
/// end of the input.
fn what_follows<R: Read>(raw: &mut Peek<R>) -> io::Result<Next> {
    match raw.peek(2)? {
        [] => return Ok(Next::End),
        [0x1f, 0x8b, ..] => return Ok(Next::Member),
        _ => {}
    }
    let (mut bytes, mut zeros) = (0u64, true);
    loop {
        let chunk = raw.fill_buf()?;
        if chunk.is_empty() {
            break;
        }
        zeros = zeros && chunk.iter().all(|&b| b == 0);
        let n = chunk.len();
        bytes += n as u64;
        raw.consume(n);
    }
    if zeros {
        Ok(Next::End)
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidData,
            TrailingData { bytes },
        ))
    }
}

/// Bytes after the last gzip member that are neither another member nor zero padding (carried
/// inside the `io::Error` that reading a [`Members`] returns).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrailingData {
    /// How many bytes follow the last member, to the end of the input.
    pub bytes: u64,
}

impl fmt::Display for TrailingData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} byte(s) of trailing data after the last gzip member",
            self.bytes
        )
    }
}

impl std::error::Error for TrailingData {}

/// The [`TrailingData`] an error from [`Members`] carries, if it is one.
pub fn trailing_data(e: &io::Error) -> Option<TrailingData> {
    e.get_ref()?.downcast_ref::<TrailingData>().copied()
}

/// A buffered reader that can also show the next `n` bytes without consuming them (`BufReader`
/// shows only what its buffer happens to hold, which may be 1 byte of the 2 of gzip's magic).
struct Peek<R> {
    inner: R,
    buf: Box<[u8]>,
    pos: usize,
    len: usize,
}

impl<R: Read> Peek<R> {
    fn new(inner: R) -> Peek<R> {
        Peek {
            inner,
            buf: vec![0; BUFFER].into_boxed_slice(),
            pos: 0,
            len: 0,
        }
    }

    /// At least `n` unconsumed bytes (`n` at most the buffer's size), or all that remain before
    /// the end of the input.
    fn peek(&mut self, n: usize) -> io::Result<&[u8]> {
        if self.len - self.pos < n {
            self.buf.copy_within(self.pos..self.len, 0);
            self.len -= self.pos;
            self.pos = 0;
            while self.len < n {
                match self.inner.read(&mut self.buf[self.len..]) {
                    Ok(0) => break,
                    Ok(k) => self.len += k,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(&self.buf[self.pos..self.len])
    }
}

impl<R: Read> Read for Peek<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let available = self.fill_buf()?;
        let n = available.len().min(out.len());
        out[..n].copy_from_slice(&available[..n]);
        self.consume(n);
        Ok(n)
    }
}

impl<R: Read> BufRead for Peek<R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        if self.pos == self.len {
            self.pos = 0;
            self.len = 0;
            loop {
                match self.inner.read(&mut self.buf) {
                    Ok(k) => {
                        self.len = k;
                        break;
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(&self.buf[self.pos..self.len])
    }

    fn consume(&mut self, n: usize) {
        self.pos = (self.pos + n).min(self.len);
    }
}

/// A gzip member read with ISA-L: the header parsed here exactly as flate2 parses it (same
/// checks, same errors), the deflate data and the trailer by ISA-L, which checks the CRC-32 and
/// length and stops right after the trailer.
#[cfg(feature = "isal")]
mod isal {
    use std::io::{self, BufRead, Read};

    use crate::format::inflate::Engine;
    use crate::format::isal::{InvalidDeflate, Isal, Wrapper};

    const FHCRC: u8 = 1 << 1;
    const FEXTRA: u8 = 1 << 2;
    const FNAME: u8 = 1 << 3;
    const FCOMMENT: u8 = 1 << 4;
    const FRESERVED: u8 = 0b1110_0000;
    /// flate2's bound on a name or comment (`MAX_HEADER_BUF`).
    const MAX_FIELD: usize = 65535;

    pub(super) struct GzMember<B> {
        pub(super) source: B,
        header_read: bool,
        z: Isal,
        end: bool,
    }

    impl<B: BufRead> GzMember<B> {
        pub(super) fn new(source: B) -> GzMember<B> {
            GzMember {
                source,
                header_read: false,
                z: Isal::new(Wrapper::GzipBody),
                end: false,
            }
        }
    }

    impl<B: BufRead> Read for GzMember<B> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if !self.header_read {
                self.header_read = true;
                // A failed header fails this read; the member then reads as ended, as flate2's
                // does.
                if let Err(e) = read_header(&mut self.source) {
                    self.end = true;
                    return Err(e);
                }
            }
            if buf.is_empty() {
                return Ok(0);
            }
            loop {
                if self.end {
                    return Ok(0);
                }
                let input = self.source.fill_buf()?;
                let eof = input.is_empty();
                let step = self.z.run(input, buf).map_err(|e| {
                    if e.get_ref().is_some_and(|i| i.is::<InvalidDeflate>()) {
                        // flate2's words, as the zlib-rs reader reports it.
                        io::Error::new(io::ErrorKind::InvalidInput, "corrupt deflate stream")
                    } else {
                        e
                    }
                })?;
                self.source.consume(step.consumed);
                self.end = step.end;
                if step.produced > 0 {
                    return Ok(step.produced);
                }
                if self.end {
                    return Ok(0);
                }
                if eof {
                    // flate2 tells a deflate stream cut short from a trailer cut short.
                    return Err(if self.z.in_trailer() {
                        io::ErrorKind::UnexpectedEof.into()
                    } else {
                        io::Error::new(io::ErrorKind::UnexpectedEof, "incomplete deflate stream")
                    });
                }
                if step.consumed == 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "the deflate stream makes no progress",
                    ));
                }
            }
        }
    }

    fn bad_header() -> io::Error {
        io::Error::new(io::ErrorKind::InvalidInput, "invalid gzip header")
    }

    /// Fill `out` from `r`; the end of input first is `UnexpectedEof`.
    fn read_exact(
        r: &mut impl BufRead,
        out: &mut [u8],
        crc: &mut crc32fast::Hasher,
    ) -> io::Result<()> {
        let mut at = 0;
        while at < out.len() {
            let chunk = match r.fill_buf() {
                Ok(chunk) => chunk,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if chunk.is_empty() {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            let n = chunk.len().min(out.len() - at);
            out[at..at + n].copy_from_slice(&chunk[..n]);
            r.consume(n);
            at += n;
        }
        crc.update(out);
        Ok(())
    }

    /// Skip a zero-terminated field (name or comment), as flate2 bounds it.
    fn skip_to_nul(r: &mut impl BufRead, crc: &mut crc32fast::Hasher) -> io::Result<()> {
        let mut len = 0usize;
        loop {
            let mut byte = [0u8];
            read_exact(r, &mut byte, crc)?;
            match byte[0] {
                0 => return Ok(()),
                _ if len == MAX_FIELD => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        "gzip header field too long",
                    ))
                }
                _ => len += 1,
            }
        }
    }

    /// Read and check a member's header (RFC 1952 section 2.3), with flate2's checks and errors.
    fn read_header(r: &mut impl BufRead) -> io::Result<()> {
        let mut crc = crc32fast::Hasher::new();
        let mut fixed = [0u8; 10];
        read_exact(r, &mut fixed, &mut crc)?;
        if fixed[0] != 0x1f || fixed[1] != 0x8b || fixed[2] != 8 {
            return Err(bad_header());
        }
        let flags = fixed[3];
        if flags & FRESERVED != 0 {
            return Err(bad_header());
        }
        if flags & FEXTRA != 0 {
            let mut xlen = [0u8; 2];
            read_exact(r, &mut xlen, &mut crc)?;
            let mut extra = vec![0u8; usize::from(u16::from_le_bytes(xlen))];
            read_exact(r, &mut extra, &mut crc)?;
        }
        if flags & FNAME != 0 {
            skip_to_nul(r, &mut crc)?;
        }
        if flags & FCOMMENT != 0 {
            skip_to_nul(r, &mut crc)?;
        }
        if flags & FHCRC != 0 {
            let sum = crc.clone().finalize() as u16;
            let mut stored = [0u8; 2];
            read_exact(r, &mut stored, &mut crc)?;
            if u16::from_le_bytes(stored) != sum {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "corrupt gzip stream does not have a matching checksum",
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut w = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        w.write_all(data).unwrap();
        w.finish().unwrap()
    }

    use crate::testing::Trickle;

    /// Everything read from `input`, in reads of `step` bytes, and the error that ended it:
    /// the same with every inflater of this build (checked here), so each test below holds for
    /// each of them.
    fn read_all(input: &[u8], step: usize) -> (Vec<u8>, Option<io::Error>) {
        let read_with = |inflater| {
            let mut r = Members::with(Trickle { data: input, step }, inflater);
            let mut out = Vec::new();
            let mut buf = vec![0; 7000];
            loop {
                match r.read(&mut buf) {
                    Ok(0) => return (out, None),
                    Ok(n) => out.extend_from_slice(&buf[..n]),
                    Err(e) => return (out, Some(e)),
                }
            }
        };
        let first = read_with(Inflater::ZlibRs);
        for &other in &Inflater::ALL[1..] {
            let (out, err) = read_with(other);
            assert!(
                crate::format::inflate::same_output(&first.0, &out, first.1.is_none()),
                "{other:?}, reads of {step}: {} bytes, not {}",
                out.len(),
                first.0.len()
            );
            let show = |e: &Option<io::Error>| e.as_ref().map(|e| (e.kind(), e.to_string()));
            assert_eq!(show(&err), show(&first.1), "{other:?}, reads of {step}");
        }
        first
    }

    fn data(n: u32) -> Vec<u8> {
        (0..n)
            .flat_map(|i| format!("{{\"n\":{i}}}\n").into_bytes())
            .collect()
    }

    #[test]
    fn members_are_read_in_order() {
        let (a, b) = (data(20_000), b"{\"last\":true}\n".to_vec());
        let mut file = gzip(&a);
        file.extend(gzip(b""));
        file.extend(gzip(&b));
        for step in [1, 2, 3, 4096, 1 << 20] {
            let (out, err) = read_all(&file, step);
            assert!(err.is_none(), "reads of {step}: {err:?}");
            assert_eq!(out, [a.as_slice(), &b].concat(), "reads of {step}");
        }
    }

    /// Zero padding after the last member ends the file, as in GNU gzip and Python.
    #[test]
    fn zero_padding_ends_the_file() {
        let a = data(5000);
        for pad in [1, 2, 511, 512, 10_000, 300_000] {
            let mut file = gzip(&a);
            file.extend(vec![0; pad]);
            for step in [1, 3, 1 << 20] {
                let (out, err) = read_all(&file, step);
                assert!(err.is_none(), "{pad} zeros, reads of {step}: {err:?}");
                assert_eq!(out, a, "{pad} zeros, reads of {step}");
            }
        }
    }

    /// Anything else after the last member is trailing data, counted to the end, after every
    /// byte of the members; never "truncated" or "invalid header".
    #[test]
    fn other_bytes_after_the_last_member_are_trailing_data() {
        let a = data(5000);
        let cases: [&[u8]; 5] = [
            b"garbage after the export\n",
            b"\x1f",
            b"\x1f\x00\x00",
            &[0, 0, 0, 7],
            b"\n",
        ];
        for tail in cases {
            let mut file = gzip(&a);
            file.extend_from_slice(tail);
            for step in [1, 2, 1 << 20] {
                let (out, err) = read_all(&file, step);
                assert_eq!(out, a, "{tail:?}, reads of {step}");
                let err = err.expect("an error");
                assert_eq!(err.kind(), io::ErrorKind::InvalidData);
                assert_eq!(
                    trailing_data(&err),
                    Some(TrailingData {
                        bytes: tail.len() as u64
                    }),
                    "{tail:?}, reads of {step}"
                );
            }
        }
    }

    /// Zero padding followed by another member: GNU gzip stops at the padding, Python reads on;
    /// the file is refused rather than read one way or the other.
    #[test]
    fn a_member_after_zero_padding_is_trailing_data() {
        let mut file = gzip(b"{\"a\":1}\n");
        file.extend([0; 512]);
        let second = gzip(b"{\"b\":2}\n");
        file.extend(&second);
        let (out, err) = read_all(&file, 4096);
        assert_eq!(out, b"{\"a\":1}\n");
        assert_eq!(
            trailing_data(&err.unwrap()).map(|t| t.bytes),
            Some(512 + second.len() as u64)
        );
    }

    /// A member cut short is truncation, and a corrupt one corruption: not trailing data.
    #[test]
    fn truncation_and_corruption_are_not_trailing_data() {
        let file = gzip(&data(5000));
        for cut in [5, 20, file.len() / 2, file.len() - 4] {
            let (_, err) = read_all(&file[..cut], 4096);
            let err = err.expect("an error");
            assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof, "cut at {cut}");
            assert_eq!(trailing_data(&err), None);
        }
        let mut bad_crc = file.clone();
        let at = bad_crc.len() - 8;
        bad_crc[at] ^= 1;
        let (_, err) = read_all(&bad_crc, 4096);
        assert!(trailing_data(&err.expect("an error")).is_none());
    }

    /// A member whose header has the optional fields `flags` asks for (RFC 1952 section 2.3:
    /// FHCRC 2, FEXTRA 4, FNAME 8, FCOMMENT 16), with `field` as the extra field, the name and
    /// the comment, then `data` deflated and its trailer.
    fn member_with(flags: u8, field: &[u8], data: &[u8]) -> Vec<u8> {
        let plain = gzip(data);
        let mut header = vec![0x1f, 0x8b, 8, flags, 0, 0, 0, 0, 0, 3];
        if flags & 4 != 0 {
            header.extend((field.len() as u16).to_le_bytes());
            header.extend(field);
        }
        for bit in [8, 16] {
            if flags & bit != 0 {
                header.extend(field);
                header.push(0);
            }
        }
        if flags & 2 != 0 {
            let crc = crc32fast::hash(&header) as u16;
            header.extend(crc.to_le_bytes());
        }
        [header, plain[10..].to_vec()].concat()
    }

    /// Every optional header field is skipped, and every bad header fails with flate2's own
    /// words, whichever inflater reads it (`read_all` compares them): the ISA-L reader parses the
    /// header itself.
    #[test]
    fn optional_header_fields_and_bad_headers() {
        let a = data(3000);
        for flags in 0..32u8 {
            for field in [&b""[..], b"export.ndjson", &[b'x'; 65535]] {
                let file = member_with(flags, field, &a);
                for step in [1, 4096] {
                    if step == 1 && field.len() > 100 {
                        continue;
                    }
                    let (out, err) = read_all(&file, step);
                    assert!(err.is_none(), "flags {flags}: {err:?}");
                    assert!(out == a, "flags {flags}, reads of {step}");
                }
            }
        }
        let message = |file: &[u8]| {
            let (out, err) = read_all(file, 4096);
            let err = err.expect("an error");
            (out.len(), err.kind(), err.to_string())
        };
        let invalid = (
            0,
            io::ErrorKind::InvalidInput,
            "invalid gzip header".to_owned(),
        );
        let mut bad_method = member_with(0, b"", &a);
        bad_method[2] = 7;
        assert_eq!(message(&bad_method), invalid);
        for reserved in [32, 64, 128] {
            assert_eq!(message(&member_with(reserved, b"", &a)), invalid);
        }
        let mut bad_hcrc = member_with(2 | 8, b"export.ndjson", &a);
        bad_hcrc[10] ^= 1;
        assert_eq!(
            message(&bad_hcrc),
            (
                0,
                io::ErrorKind::InvalidInput,
                "corrupt gzip stream does not have a matching checksum".to_owned()
            )
        );
        for flag in [8, 16] {
            assert_eq!(
                message(&member_with(flag, &[b'x'; 65536], &a)),
                (
                    0,
                    io::ErrorKind::InvalidInput,
                    "gzip header field too long".to_owned()
                )
            );
        }
        // Cut inside the header, in the deflate data, and in the trailer.
        let file = member_with(4 | 8 | 16, b"export.ndjson", &a);
        let header = 10 + 2 + 13 + 2 * 14;
        let eof = |what: &str| (io::ErrorKind::UnexpectedEof, what.to_owned());
        let cut = |at: usize| {
            let (_, kind, text) = message(&file[..at]);
            (kind, text)
        };
        assert_eq!(cut(5), eof("unexpected end of file"));
        assert_eq!(cut(header - 3), eof("unexpected end of file"));
        assert_eq!(cut(header + 20), eof("incomplete deflate stream"));
        assert_eq!(cut(file.len() - 3), eof("unexpected end of file"));
    }

    #[test]
    fn the_message_counts_the_bytes() {
        assert_eq!(
            TrailingData { bytes: 3 }.to_string(),
            "3 byte(s) of trailing data after the last gzip member"
        );
    }
}
