//! The wire format: length-prefixed binary frames.
//!
//! ```text
//! frame   = length:u32 kind:u8 body          (length counts kind and body, big-endian)
//! string  = length:u16 utf-8 bytes           (at most 1024 bytes)
//! Hello     1  magic "HWMV" version:u16 chunk_size:u32 operation uid volume source target nonce:32
//! Challenge 2  magic "HWMV" version:u16 nonce:32 size:u64 proof:32
//! Response  3  proof:32
//! Refused   4  code:u8 message                (same layout in every version)
//! Range     5  epoch:u32 from_chunk:u64 rate:u64 tag:32
//! Chunk     6  epoch:u32 index:u64 digest:32 tag:32 data
//! Zero      7  epoch:u32 index:u64 tag:32
//! End       8  epoch:u32 total_chunks:u64 tag:32
//! Verify    9  tag:32
//! Digest   10  digest:32 tag:32
//! KeepAlive 11
//! ```
//!
//! Hello and Challenge start with the magic and the version, which every version keeps, so
//! peers of different versions refuse each other with a clear reason instead of misreading.
//! The reader checks the announced length against a limit before allocating anything.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::auth::RefusalKind;
use crate::crypto::{CopyIdentity, Nonce, Tag};
use crate::pool::BufferPool;

pub const PROTOCOL_VERSION: u16 = 1;
const MAGIC: [u8; 4] = *b"HWMV";
/// The largest frame other than a chunk (a Hello with five maximal strings fits).
pub(crate) const MAX_CONTROL_FRAME: usize = 16 * 1024;
pub(crate) const MAX_STRING: usize = 1024;
/// Kind, epoch, index, digest and tag of a Chunk frame.
pub(crate) const CHUNK_HEADER_LEN: usize = 1 + 4 + 8 + 32 + 32;
/// Frames at most this long are read into a fresh buffer, longer ones into a pooled one.
const SMALL_FRAME: usize = 4096;

/// The largest frame a stream of `chunk_size` chunks may carry.
pub(crate) fn max_stream_frame(chunk_size: u32) -> usize {
    CHUNK_HEADER_LEN + chunk_size as usize
}

const HELLO: u8 = 1;
const CHALLENGE: u8 = 2;
const RESPONSE: u8 = 3;
const REFUSED: u8 = 4;
const RANGE: u8 = 5;
const CHUNK: u8 = 6;
const ZERO: u8 = 7;
const END: u8 = 8;
const VERIFY: u8 = 9;
const DIGEST: u8 = 10;
const KEEPALIVE: u8 = 11;

fn kind_name(kind: u8) -> &'static str {
    match kind {
        HELLO => "Hello",
        CHALLENGE => "Challenge",
        RESPONSE => "Response",
        REFUSED => "Refused",
        RANGE => "Range",
        CHUNK => "Chunk",
        ZERO => "Zero",
        END => "End",
        VERIFY => "Verify",
        DIGEST => "Digest",
        KEEPALIVE => "KeepAlive",
        _ => "unknown",
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("the connection was closed")]
    Closed,
    #[error("connection: {0}")]
    Io(#[from] std::io::Error),
    #[error("empty frame")]
    Empty,
    #[error("a frame of {len} bytes exceeds the limit of {max}")]
    TooLarge { len: usize, max: usize },
    #[error("unknown frame kind {0}")]
    UnknownKind(u8),
    #[error("{0} frame ends early")]
    Truncated(&'static str),
    #[error("{frame} frame has {extra} bytes too many")]
    TrailingBytes { frame: &'static str, extra: usize },
    #[error("{0} frame holds a string that is not UTF-8")]
    NotUtf8(&'static str),
    #[error("{frame} frame holds a string of {len} bytes (at most {MAX_STRING})")]
    StringTooLong { frame: &'static str, len: usize },
    #[error("not a block mover peer (bad magic)")]
    BadMagic,
    #[error(
        "the peer speaks mover protocol version {theirs}, this agent version {PROTOCOL_VERSION}"
    )]
    UnsupportedVersion { theirs: u16 },
    #[error("{0} frame carries no data")]
    EmptyChunk(&'static str),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Hello {
    pub chunk_size: u32,
    pub identity: CopyIdentity,
    pub nonce: Nonce,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Challenge {
    pub nonce: Nonce,
    /// Bytes the source serves.
    pub size: u64,
    pub proof: Tag,
}

/// A chunk's data, kept in the buffer the frame was read into (no copy).
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Payload {
    buf: Vec<u8>,
    start: usize,
}

impl Payload {
    pub fn data(&self) -> &[u8] {
        &self.buf[self.start..]
    }

    /// The buffer, for the pool.
    pub fn into_buf(self) -> Vec<u8> {
        self.buf
    }
}

#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Frame {
    Hello(Hello),
    Challenge(Challenge),
    Response {
        proof: Tag,
    },
    Refused {
        kind: RefusalKind,
        message: String,
    },
    Range {
        epoch: u32,
        from_chunk: u64,
        rate: u64,
        tag: Tag,
    },
    Chunk {
        epoch: u32,
        index: u64,
        digest: [u8; 32],
        tag: Tag,
        payload: Payload,
    },
    Zero {
        epoch: u32,
        index: u64,
        tag: Tag,
    },
    End {
        epoch: u32,
        total_chunks: u64,
        tag: Tag,
    },
    Verify {
        tag: Tag,
    },
    Digest {
        value: [u8; 32],
        tag: Tag,
    },
    KeepAlive,
}

impl Frame {
    pub fn name(&self) -> &'static str {
        kind_name(match self {
            Frame::Hello(_) => HELLO,
            Frame::Challenge(_) => CHALLENGE,
            Frame::Response { .. } => RESPONSE,
            Frame::Refused { .. } => REFUSED,
            Frame::Range { .. } => RANGE,
            Frame::Chunk { .. } => CHUNK,
            Frame::Zero { .. } => ZERO,
            Frame::End { .. } => END,
            Frame::Verify { .. } => VERIFY,
            Frame::Digest { .. } => DIGEST,
            Frame::KeepAlive => KEEPALIVE,
        })
    }
}

fn put_string(out: &mut Vec<u8>, s: &str) {
    // Callers check lengths (a longer string is refused before it is sent); a truncated
    // length here would at worst make the peer refuse the frame.
    let len = s.len().min(u16::MAX as usize);
    out.extend_from_slice(&(len as u16).to_be_bytes());
    out.extend_from_slice(&s.as_bytes()[..len]);
}

/// The Hello's body: what the transcript covers.
pub(crate) fn hello_body(hello: &Hello) -> Vec<u8> {
    let mut out = Vec::with_capacity(128);
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&PROTOCOL_VERSION.to_be_bytes());
    out.extend_from_slice(&hello.chunk_size.to_be_bytes());
    let id = &hello.identity;
    for s in [
        &id.operation,
        &id.uid,
        &id.volume,
        &id.source_node,
        &id.target_node,
    ] {
        put_string(&mut out, s);
    }
    out.extend_from_slice(&hello.nonce);
    out
}

/// The Challenge's body without its proof: what the transcript covers.
pub(crate) fn challenge_signed(nonce: &Nonce, size: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&PROTOCOL_VERSION.to_be_bytes());
    out.extend_from_slice(nonce);
    out.extend_from_slice(&size.to_be_bytes());
    out
}

fn begin(out: &mut Vec<u8>, kind: u8) -> usize {
    let at = out.len();
    out.extend_from_slice(&[0, 0, 0, 0, kind]);
    at
}

fn finish(out: &mut [u8], at: usize) {
    let len = (out.len() - at - 4) as u32;
    out[at..at + 4].copy_from_slice(&len.to_be_bytes());
}

/// Appends a Chunk frame's length, kind and header; its `data_len` bytes of data follow.
pub(crate) fn encode_chunk_header(
    out: &mut Vec<u8>,
    epoch: u32,
    index: u64,
    digest: &[u8; 32],
    tag: &Tag,
    data_len: usize,
) {
    let len = (CHUNK_HEADER_LEN + data_len) as u32;
    out.extend_from_slice(&len.to_be_bytes());
    out.push(CHUNK);
    out.extend_from_slice(&epoch.to_be_bytes());
    out.extend_from_slice(&index.to_be_bytes());
    out.extend_from_slice(digest);
    out.extend_from_slice(tag);
}

/// Appends `frame`, length prefix included.
pub(crate) fn encode(frame: &Frame, out: &mut Vec<u8>) {
    if let Frame::Chunk {
        epoch,
        index,
        digest,
        tag,
        payload,
    } = frame
    {
        encode_chunk_header(out, *epoch, *index, digest, tag, payload.data().len());
        out.extend_from_slice(payload.data());
        return;
    }
    let at = match frame {
        Frame::Hello(hello) => {
            let at = begin(out, HELLO);
            out.extend_from_slice(&hello_body(hello));
            at
        }
        Frame::Challenge(c) => {
            let at = begin(out, CHALLENGE);
            out.extend_from_slice(&challenge_signed(&c.nonce, c.size));
            out.extend_from_slice(&c.proof);
            at
        }
        Frame::Response { proof } => {
            let at = begin(out, RESPONSE);
            out.extend_from_slice(proof);
            at
        }
        Frame::Refused { kind, message } => {
            let at = begin(out, REFUSED);
            out.push(kind.code());
            // A reason is for people: cut to what the peer accepts, on a char boundary.
            let mut end = message.len().min(MAX_STRING);
            while !message.is_char_boundary(end) {
                end -= 1;
            }
            put_string(out, &message[..end]);
            at
        }
        Frame::Range {
            epoch,
            from_chunk,
            rate,
            tag,
        } => {
            let at = begin(out, RANGE);
            out.extend_from_slice(&epoch.to_be_bytes());
            out.extend_from_slice(&from_chunk.to_be_bytes());
            out.extend_from_slice(&rate.to_be_bytes());
            out.extend_from_slice(tag);
            at
        }
        Frame::Zero { epoch, index, tag } => {
            let at = begin(out, ZERO);
            out.extend_from_slice(&epoch.to_be_bytes());
            out.extend_from_slice(&index.to_be_bytes());
            out.extend_from_slice(tag);
            at
        }
        Frame::End {
            epoch,
            total_chunks,
            tag,
        } => {
            let at = begin(out, END);
            out.extend_from_slice(&epoch.to_be_bytes());
            out.extend_from_slice(&total_chunks.to_be_bytes());
            out.extend_from_slice(tag);
            at
        }
        Frame::Verify { tag } => {
            let at = begin(out, VERIFY);
            out.extend_from_slice(tag);
            at
        }
        Frame::Digest { value, tag } => {
            let at = begin(out, DIGEST);
            out.extend_from_slice(value);
            out.extend_from_slice(tag);
            at
        }
        Frame::KeepAlive => begin(out, KEEPALIVE),
        Frame::Chunk { .. } => return,
    };
    finish(out, at);
}

/// A cursor over a frame's body that reports running out as a truncated frame.
struct Body<'a> {
    buf: &'a [u8],
    pos: usize,
    frame: &'static str,
}

impl<'a> Body<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], FrameError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&end| end <= self.buf.len())
            .ok_or(FrameError::Truncated(self.frame))?;
        let bytes = &self.buf[self.pos..end];
        self.pos = end;
        Ok(bytes)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], FrameError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8, FrameError> {
        Ok(self.array::<1>()?[0])
    }

    fn u16(&mut self) -> Result<u16, FrameError> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    fn u32(&mut self) -> Result<u32, FrameError> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, FrameError> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    fn string(&mut self) -> Result<String, FrameError> {
        let len = self.u16()? as usize;
        if len > MAX_STRING {
            return Err(FrameError::StringTooLong {
                frame: self.frame,
                len,
            });
        }
        let bytes = self.take(len)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| FrameError::NotUtf8(self.frame))
    }

    /// Magic and version, which every version keeps in place.
    fn preamble(&mut self) -> Result<(), FrameError> {
        if self.array::<4>()? != MAGIC {
            return Err(FrameError::BadMagic);
        }
        let version = self.u16()?;
        if version != PROTOCOL_VERSION {
            return Err(FrameError::UnsupportedVersion { theirs: version });
        }
        Ok(())
    }

    fn end(self) -> Result<(), FrameError> {
        match self.buf.len() - self.pos {
            0 => Ok(()),
            extra => Err(FrameError::TrailingBytes {
                frame: self.frame,
                extra,
            }),
        }
    }
}

/// Decodes a frame from its kind byte and body (the length prefix already stripped).
pub(crate) fn decode(buf: Vec<u8>) -> Result<Frame, FrameError> {
    let Some(&kind) = buf.first() else {
        return Err(FrameError::Empty);
    };
    let mut b = Body {
        buf: &buf[1..],
        pos: 0,
        frame: kind_name(kind),
    };
    let frame = match kind {
        HELLO => {
            b.preamble()?;
            let chunk_size = b.u32()?;
            let identity = CopyIdentity {
                operation: b.string()?,
                uid: b.string()?,
                volume: b.string()?,
                source_node: b.string()?,
                target_node: b.string()?,
            };
            let nonce = b.array()?;
            Frame::Hello(Hello {
                chunk_size,
                identity,
                nonce,
            })
        }
        CHALLENGE => {
            b.preamble()?;
            Frame::Challenge(Challenge {
                nonce: b.array()?,
                size: b.u64()?,
                proof: b.array()?,
            })
        }
        RESPONSE => Frame::Response { proof: b.array()? },
        REFUSED => Frame::Refused {
            kind: RefusalKind::from_code(b.u8()?),
            message: b.string()?,
        },
        RANGE => Frame::Range {
            epoch: b.u32()?,
            from_chunk: b.u64()?,
            rate: b.u64()?,
            tag: b.array()?,
        },
        CHUNK => {
            let epoch = b.u32()?;
            let index = b.u64()?;
            let digest = b.array()?;
            let tag = b.array()?;
            if b.pos == b.buf.len() {
                return Err(FrameError::EmptyChunk("Chunk"));
            }
            // The rest of the frame is the data, left where it was read.
            return Ok(Frame::Chunk {
                epoch,
                index,
                digest,
                tag,
                payload: Payload {
                    buf,
                    start: CHUNK_HEADER_LEN,
                },
            });
        }
        ZERO => Frame::Zero {
            epoch: b.u32()?,
            index: b.u64()?,
            tag: b.array()?,
        },
        END => Frame::End {
            epoch: b.u32()?,
            total_chunks: b.u64()?,
            tag: b.array()?,
        },
        VERIFY => Frame::Verify { tag: b.array()? },
        DIGEST => Frame::Digest {
            value: b.array()?,
            tag: b.array()?,
        },
        KEEPALIVE => Frame::KeepAlive,
        other => return Err(FrameError::UnknownKind(other)),
    };
    b.end()?;
    Ok(frame)
}

fn truncated(e: std::io::Error, what: &'static str) -> FrameError {
    if e.kind() == std::io::ErrorKind::UnexpectedEof {
        FrameError::Truncated(what)
    } else {
        FrameError::Io(e)
    }
}

/// Reads one frame of at most `max` bytes; returns it with the bytes it took on the wire.
/// A peer closing between frames is `Closed`, inside one `Truncated`.
pub(crate) async fn read_frame<R: AsyncRead + Unpin>(
    r: &mut R,
    max: usize,
    pool: &BufferPool,
) -> Result<(Frame, usize), FrameError> {
    let mut prefix = [0u8; 4];
    let first = r.read(&mut prefix).await?;
    if first == 0 {
        return Err(FrameError::Closed);
    }
    r.read_exact(&mut prefix[first..])
        .await
        .map_err(|e| truncated(e, "length prefix of a"))?;
    let len = u32::from_be_bytes(prefix) as usize;
    if len == 0 {
        return Err(FrameError::Empty);
    }
    if len > max {
        return Err(FrameError::TooLarge { len, max });
    }
    let mut buf = if len > SMALL_FRAME {
        pool.take(len)
    } else {
        vec![0; len]
    };
    r.read_exact(&mut buf)
        .await
        .map_err(|e| truncated(e, "a"))?;
    Ok((decode(buf)?, 4 + len))
}

/// Writes one control frame (not flushed).
pub(crate) async fn write_frame<W: AsyncWrite + Unpin>(
    w: &mut W,
    frame: &Frame,
) -> std::io::Result<usize> {
    let mut out = Vec::with_capacity(128);
    encode(frame, &mut out);
    w.write_all(&out).await?;
    Ok(out.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn samples() -> Vec<Frame> {
        vec![
            Frame::Hello(Hello {
                chunk_size: 4096,
                identity: CopyIdentity {
                    operation: "op".into(),
                    uid: "uid".into(),
                    volume: "vol".into(),
                    source_node: "a".into(),
                    target_node: "b".into(),
                },
                nonce: [1; 32],
            }),
            Frame::Challenge(Challenge {
                nonce: [2; 32],
                size: 12345,
                proof: [3; 32],
            }),
            Frame::Response { proof: [4; 32] },
            Frame::Refused {
                kind: RefusalKind::UidMismatch,
                message: "no".into(),
            },
            Frame::Range {
                epoch: 2,
                from_chunk: 9,
                rate: 100,
                tag: [5; 32],
            },
            Frame::Chunk {
                epoch: 1,
                index: 3,
                digest: [6; 32],
                tag: [7; 32],
                payload: Payload {
                    buf: {
                        let mut b = vec![0u8; CHUNK_HEADER_LEN];
                        b.extend_from_slice(b"data");
                        b
                    },
                    start: CHUNK_HEADER_LEN,
                },
            },
            Frame::Zero {
                epoch: 1,
                index: 4,
                tag: [8; 32],
            },
            Frame::End {
                epoch: 1,
                total_chunks: 5,
                tag: [9; 32],
            },
            Frame::Verify { tag: [10; 32] },
            Frame::Digest {
                value: [11; 32],
                tag: [12; 32],
            },
            Frame::KeepAlive,
        ]
    }

    fn encoded(frame: &Frame) -> Vec<u8> {
        let mut out = Vec::new();
        encode(frame, &mut out);
        out
    }

    /// Frames as the reader sees them: a payload's buffer is the whole frame body.
    fn same(a: &Frame, b: &Frame) -> bool {
        encoded(a) == encoded(b)
    }

    #[tokio::test]
    async fn every_frame_round_trips_through_the_reader() {
        let pool = BufferPool::new(2);
        for frame in samples() {
            let bytes = encoded(&frame);
            let mut r = &bytes[..];
            let read = read_frame(&mut r, MAX_CONTROL_FRAME, &pool).await;
            match read {
                Ok((back, n)) => {
                    assert!(same(&frame, &back), "{frame:?} vs {back:?}");
                    assert_eq!(n, bytes.len());
                }
                Err(e) => panic!("{}: {e}", frame.name()),
            }
        }
    }

    #[tokio::test]
    async fn oversized_truncated_and_closed_streams_are_errors() {
        let pool = BufferPool::new(1);
        // An announced 1 GiB frame is refused before anything is allocated.
        let huge = (1u32 << 30).to_be_bytes();
        let r = read_frame(&mut &huge[..], MAX_CONTROL_FRAME, &pool).await;
        assert!(matches!(r, Err(FrameError::TooLarge { .. })), "{r:?}");
        let empty = 0u32.to_be_bytes();
        let r = read_frame(&mut &empty[..], MAX_CONTROL_FRAME, &pool).await;
        assert!(matches!(r, Err(FrameError::Empty)), "{r:?}");
        let r = read_frame(&mut &[][..], MAX_CONTROL_FRAME, &pool).await;
        assert!(matches!(r, Err(FrameError::Closed)), "{r:?}");
        let r = read_frame(&mut &[0u8, 0][..], MAX_CONTROL_FRAME, &pool).await;
        assert!(matches!(r, Err(FrameError::Truncated(_))), "{r:?}");
        let mut end = encoded(&Frame::End {
            epoch: 1,
            total_chunks: 2,
            tag: [0; 32],
        });
        end.pop();
        let r = read_frame(&mut &end[..], MAX_CONTROL_FRAME, &pool).await;
        assert!(matches!(r, Err(FrameError::Truncated(_))), "{r:?}");
        // A chunk is refused where only control frames are expected.
        let chunk = encoded(&samples()[5]);
        let r = read_frame(&mut &chunk[..], 8, &pool).await;
        assert!(matches!(r, Err(FrameError::TooLarge { .. })), "{r:?}");
    }

    #[test]
    fn malformed_bodies_are_errors() {
        assert!(matches!(decode(vec![99]), Err(FrameError::UnknownKind(99))));
        assert!(matches!(decode(vec![]), Err(FrameError::Empty)));
        // A Hello of another program, and of another version.
        let mut hello = encoded(&samples()[0])[4..].to_vec();
        hello[1] = b'X';
        assert!(matches!(decode(hello), Err(FrameError::BadMagic)));
        let mut hello = encoded(&samples()[0])[4..].to_vec();
        hello[5] = 9;
        assert!(matches!(
            decode(hello),
            Err(FrameError::UnsupportedVersion { theirs: 0x0901 })
        ));
        // Trailing bytes, a chunk without data, a string that is not UTF-8 or too long.
        let mut verify = encoded(&Frame::Verify { tag: [0; 32] })[4..].to_vec();
        verify.push(0);
        assert!(matches!(
            decode(verify),
            Err(FrameError::TrailingBytes { extra: 1, .. })
        ));
        let mut chunk = vec![CHUNK];
        chunk.extend_from_slice(&[0; CHUNK_HEADER_LEN - 1]);
        assert!(matches!(decode(chunk), Err(FrameError::EmptyChunk(_))));
        let refused = vec![REFUSED, 1, 0, 2, 0xff, 0xfe];
        assert!(matches!(decode(refused), Err(FrameError::NotUtf8(_))));
        let mut long = vec![REFUSED, 1, 0x08, 0x00];
        long.extend_from_slice(&[b'a'; 2048]);
        assert!(matches!(
            decode(long),
            Err(FrameError::StringTooLong { len: 2048, .. })
        ));
    }

    #[test]
    fn refusal_reasons_are_cut_to_the_limit_on_a_char_boundary() {
        let message = "é".repeat(MAX_STRING);
        let frame = Frame::Refused {
            kind: RefusalKind::Denied,
            message,
        };
        match decode(encoded(&frame)[4..].to_vec()) {
            Ok(Frame::Refused { message, .. }) => assert_eq!(message.len(), MAX_STRING),
            other => panic!("{other:?}"),
        }
    }

    proptest! {
        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = decode(bytes);
        }

        #[test]
        fn reading_arbitrary_streams_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let rt = tokio::runtime::Builder::new_current_thread().build();
            prop_assert!(rt.is_ok());
            if let Ok(rt) = rt {
                let pool = BufferPool::new(1);
                rt.block_on(async {
                    let mut r = &bytes[..];
                    // Read until the stream ends or breaks; every outcome is a value.
                    while read_frame(&mut r, 1024, &pool).await.is_ok() {}
                });
            }
        }

        #[test]
        fn flipping_a_byte_of_a_valid_frame_never_panics(which in 0usize..11, at in any::<prop::sample::Index>(), bit in 0u8..8) {
            let frames = samples();
            let mut body = encoded(&frames[which])[4..].to_vec();
            let i = at.index(body.len());
            body[i] ^= 1 << bit;
            let _ = decode(body);
        }
    }
}
