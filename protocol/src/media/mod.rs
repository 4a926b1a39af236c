//! Media anchoring for hot-hot early media, sans-IO: SDP rewriting (`sdp`), the RTP header edits
//! (`rtp`), the relay's port pool (`ports`), each call's media session with its selection,
//! normalisation and silence detection (`session`), and the plane that holds them and takes
//! every packet ([`MediaPlane`]). The driver owns the sockets: it binds what the plane lists, feeds
//! it received packets with `now`, and sends what it says.

pub mod sdp;

// Placeholder API while the plane is written on its own branch (removed at the merge).
mod stub;
pub use stub::*;
