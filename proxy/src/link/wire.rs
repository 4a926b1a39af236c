//! The node link's frames on the wire: a 4-byte big-endian length, then the frame in postcard
//! (serde's compact binary format; byte fields as bytes, read in one copy, not one visit a
//! byte). A batch of frames may travel packed: one `Packed` frame holding their encodings,
//! LZ4-compressed (the calls of a batch share most of their SIP text, so a batch shrinks to a
//! fraction, and with it the packets, encryption and system calls of the link).
//!
//! It owns the encoding and the receive bound; it must not know what a frame means.

use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use tokio::io::{AsyncRead, AsyncReadExt};

/// Default bound on one received frame: far above any SIP message (and its JSON bytes), far
/// below what would hurt a node.
pub const DEFAULT_MAX_FRAME: usize = 1 << 20;

/// One message between the two nodes of a pair.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Frame {
    /// The first frame on each direction's stream: who sends, and which run of it (a restarted
    /// node has a new epoch).
    Hello { node_id: u16, epoch: u64 },
    /// A datagram that reached this node but belongs to the peer's calls; `received`: when
    /// the kernel took it (ns since the Unix epoch), if known.
    Forward {
        #[serde(with = "serde_bytes")]
        bytes: Vec<u8>,
        from: SocketAddr,
        listener: usize,
        received: Option<u64>,
    },
    /// Call state for the peer to keep (opaque to the link: the replication encodes it).
    Replicate(#[serde(with = "serde_bytes")] Vec<u8>),
    /// Call state the sender waits on: the peer keeps it, then answers with a `Confirmed`
    /// naming `seq`.
    Confirm {
        seq: u64,
        #[serde(with = "serde_bytes")]
        bytes: Vec<u8>,
    },
    /// The peer has the states sent with `Confirm { seq }` under these numbers (those that came
    /// together are confirmed together).
    Confirmed(Vec<u64>),
    /// Part of the sender's calls, sent when the link comes up (opaque to the link).
    Snapshot(#[serde(with = "serde_bytes")] Vec<u8>),
    /// The sender's snapshot is complete; `epoch` names the sender's run (a restarted node
    /// has a new one).
    SnapshotDone { epoch: u64 },
    /// Frames encoded one after the other (`len` bytes), LZ4-compressed: read as if they had
    /// come one by one. Never holds a `Packed` or a `Hello`.
    Packed {
        len: u32,
        #[serde(with = "serde_bytes")]
        lz4: Vec<u8>,
    },
}

impl Frame {
    /// It must not wait for others to share its packet: a datagram its owner must answer (its
    /// transit is the caller's), confirmations the peer's calls wait on (they answer a batch,
    /// so they come one for many), the connection's first frame.
    pub fn is_urgent(&self) -> bool {
        matches!(
            self,
            Frame::Forward { .. } | Frame::Confirmed(_) | Frame::Hello { .. }
        )
    }
}

/// Why a frame could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {len} bytes is over the bound of {max}")]
    TooLarge { len: usize, max: usize },
    #[error("frame does not decode: {0}")]
    Decode(#[from] postcard::Error),
    #[error("stream: {0}")]
    Io(#[from] std::io::Error),
    #[error("packed frames: {0}")]
    Packed(String),
}

/// Smallest run of encoded frames worth packing: below it, compression saves no packet.
pub const PACK_MIN: usize = 512;

/// `encoded` (frames as [`encode`] wrote them) as one encoded `Packed` frame, when that is
/// smaller and its content within `max` (what the peer reads at most); `None` to send them as
/// they are.
pub fn pack(encoded: &[u8], max: usize) -> Option<Vec<u8>> {
    if encoded.len() < PACK_MIN || encoded.len() > max {
        return None;
    }
    let len = u32::try_from(encoded.len()).ok()?;
    let lz4 = lz4_flex::block::compress(encoded);
    // Its own framing costs a few bytes: not worth it unless it saves a tenth.
    if lz4.len() + lz4.len() / 10 >= encoded.len() {
        return None;
    }
    encode(&Frame::Packed { len, lz4 }).ok()
}

/// The frames a `Packed` frame holds, in order. Refuses a content over `max` before allocating
/// it, content that does not decompress to exactly `len` bytes, a frame cut short, and a
/// `Packed` or `Hello` inside.
pub fn unpack(len: u32, lz4: &[u8], max: usize) -> Result<Vec<Frame>, FrameError> {
    let len = len as usize;
    if len > max {
        return Err(FrameError::TooLarge { len, max });
    }
    let mut content = vec![0u8; len];
    let written = lz4_flex::block::decompress_into(lz4, &mut content)
        .map_err(|e| FrameError::Packed(e.to_string()))?;
    if written != len {
        return Err(FrameError::Packed(format!(
            "{written} bytes inside where {len} were announced"
        )));
    }
    let mut frames = Vec::new();
    let mut rest = &content[..];
    while !rest.is_empty() {
        let (prefix, body) = rest
            .split_first_chunk::<4>()
            .ok_or_else(|| FrameError::Packed("a frame's length cut short".into()))?;
        let body_len = body_len(*prefix, max)?;
        let (body, after) = body
            .split_at_checked(body_len)
            .ok_or_else(|| FrameError::Packed("a frame cut short".into()))?;
        match postcard::from_bytes(body)? {
            Frame::Packed { .. } | Frame::Hello { .. } => {
                return Err(FrameError::Packed("a packed or hello frame inside".into()))
            }
            frame => frames.push(frame),
        }
        rest = after;
    }
    Ok(frames)
}

/// The frame as sent: length prefix and body.
pub fn encode(frame: &Frame) -> Result<Vec<u8>, postcard::Error> {
    let body = postcard::to_stdvec(frame)?;
    let mut out = Vec::with_capacity(4 + body.len());
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(&body);
    Ok(out)
}

/// The body length a frame's prefix announces, refused over `max`.
fn body_len(prefix: [u8; 4], max: usize) -> Result<usize, FrameError> {
    let len = u32::from_be_bytes(prefix) as usize;
    if len > max {
        return Err(FrameError::TooLarge { len, max });
    }
    Ok(len)
}

/// Reads one frame; `Ok(None)` at a clean end of stream before a frame starts. A length over
/// `max` is refused before anything is allocated for it.
pub async fn read_frame<R: AsyncRead + Unpin>(
    stream: &mut R,
    max: usize,
) -> Result<Option<Frame>, FrameError> {
    let mut prefix = [0u8; 4];
    match stream.read_exact(&mut prefix).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let mut body = vec![0u8; body_len(prefix, max)?];
    stream.read_exact(&mut body).await?;
    Ok(Some(postcard::from_bytes(&body)?))
}
