//! The journal: every message every simulated peer received or sent, in one list, so a test (or
//! `pointsman drill`) can ask what happened where, and in which order.

use bytes::Bytes;
use pointsman_protocol::wire::{self, Framing, Limits, StartLine};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::Notify;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dir {
    /// Received by the peer (stamped by the kernel on UDP).
    In,
    /// Sent by the peer.
    Out,
}

/// What a test usually asks about a message, read once when it is journaled.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// `INVITE`, `BYE`, ... for requests.
    pub method: Option<String>,
    /// The status code of responses.
    pub code: Option<u16>,
    pub call_id: String,
    /// The method named in CSeq.
    pub cseq_method: String,
    /// The top Via's branch.
    pub branch: String,
    /// Whether the message scanned cleanly.
    pub valid: bool,
    /// What rsip, a SIP parser independent of pointsman's own `wire`, could not read in it
    /// (see [`independent_read`]); `None`: it read the whole message.
    pub independent_error: Option<String>,
}

impl Summary {
    pub fn of(bytes: &[u8]) -> Summary {
        let framing = Framing::Datagram;
        let independent_error = independent_read(bytes).err();
        let Ok(msg) = wire::scan(bytes, framing, &Limits::default()) else {
            return Summary {
                independent_error,
                ..Summary::default()
            };
        };
        let text = |s: wire::Span| String::from_utf8_lossy(msg.slice(s)).into_owned();
        let (method, code) = match msg.start {
            StartLine::Request { method_span, .. } => (Some(text(method_span)), None),
            StartLine::Response { code, .. } => (None, Some(code)),
        };
        Summary {
            method,
            code,
            call_id: text(msg.call_id),
            cseq_method: text(msg.cseq_method_span),
            branch: msg.top_via.branch.map(text).unwrap_or_default(),
            valid: true,
            independent_error,
        }
    }

    /// A request of this method.
    pub fn is(&self, method: &str) -> bool {
        self.method.as_deref() == Some(method)
    }

    /// A response with this code to a request of this method.
    pub fn is_response(&self, code: u16, cseq_method: &str) -> bool {
        self.code == Some(code) && self.cseq_method == cseq_method
    }
}

/// Reads `bytes` with rsip, a SIP parser that shares nothing with pointsman's `wire`: the start
/// line, every header line, and the typed values of Via, From, To, Call-ID and CSeq. Tests use
/// it to check that what pointsman sends is read the same by an implementation other than its
/// own.
pub fn independent_read(bytes: &[u8]) -> Result<(), String> {
    use rsip::prelude::*;
    let msg = rsip::SipMessage::try_from(bytes).map_err(|e| format!("message: {e}"))?;
    let typed = |what: &str, r: Result<(), rsip::Error>| r.map_err(|e| format!("{what}: {e}"));
    typed("Via", msg.via_header().and_then(|h| h.typed().map(drop)))?;
    typed("From", msg.from_header().and_then(|h| h.typed().map(drop)))?;
    typed("To", msg.to_header().and_then(|h| h.typed().map(drop)))?;
    typed("Call-ID", msg.call_id_header().map(drop))?;
    typed("CSeq", msg.cseq_header().and_then(|h| h.typed().map(drop)))?;
    Ok(())
}

#[derive(Clone, Debug)]
pub struct Entry {
    /// Receive time as the kernel stamped it (UDP), or when the peer read or sent it.
    pub at: SystemTime,
    pub peer: String,
    pub dir: Dir,
    /// The other end.
    pub remote: SocketAddr,
    pub bytes: Bytes,
    pub summary: Summary,
}

impl Entry {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes).into_owned()
    }

    /// The value of the first header named `name` (case-insensitive, full names only).
    pub fn header(&self, name: &str) -> Option<String> {
        header_value(&self.bytes, name)
    }

    pub fn first_line(&self) -> String {
        let text = String::from_utf8_lossy(&self.bytes);
        text.split("\r\n").next().unwrap_or_default().to_string()
    }
}

/// The value of the first header line named `name` in `bytes` (case-insensitive).
pub fn header_value(bytes: &[u8], name: &str) -> Option<String> {
    let text = std::str::from_utf8(bytes).ok()?;
    let head = text.split("\r\n\r\n").next()?;
    head.split("\r\n").skip(1).find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().to_string())
    })
}

/// Shared by every simulated peer of one scenario.
#[derive(Default)]
pub struct Journal {
    entries: Mutex<Vec<Entry>>,
    changed: Notify,
}

impl Journal {
    pub fn record(&self, peer: &str, dir: Dir, remote: SocketAddr, bytes: Bytes, at: SystemTime) {
        let summary = Summary::of(&bytes);
        let entry = Entry {
            at,
            peer: peer.to_string(),
            dir,
            remote,
            bytes,
            summary,
        };
        self.lock().push(entry);
        self.changed.notify_waiters();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Entry>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Everything so far, in the order it was journaled.
    pub fn entries(&self) -> Vec<Entry> {
        self.lock().clone()
    }

    /// What `peer` received, in kernel receive order.
    pub fn received(&self, peer: &str) -> Vec<Entry> {
        let mut v: Vec<Entry> = self
            .lock()
            .iter()
            .filter(|e| e.peer == peer && e.dir == Dir::In)
            .cloned()
            .collect();
        v.sort_by_key(|e| e.at);
        v
    }

    /// How many messages `peer` received that match.
    pub fn count(&self, peer: &str, pred: impl Fn(&Summary) -> bool) -> usize {
        self.lock()
            .iter()
            .filter(|e| e.peer == peer && e.dir == Dir::In && pred(&e.summary))
            .count()
    }

    /// The first message `peer` receives that matches, waiting up to `timeout` for it.
    pub async fn wait_for(
        &self,
        peer: &str,
        timeout: Duration,
        pred: impl Fn(&Summary) -> bool,
    ) -> Option<Entry> {
        self.wait_for_nth(peer, 1, timeout, pred).await
    }

    /// The `n`th (from 1) message `peer` receives that matches, waiting up to `timeout`.
    pub async fn wait_for_nth(
        &self,
        peer: &str,
        n: usize,
        timeout: Duration,
        pred: impl Fn(&Summary) -> bool,
    ) -> Option<Entry> {
        let deadline = Instant::now() + timeout;
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let found = self
                .received(peer)
                .into_iter()
                .filter(|e| pred(&e.summary))
                .nth(n.saturating_sub(1));
            if found.is_some() {
                return found;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || tokio::time::timeout(left, changed).await.is_err() {
                return None;
            }
        }
    }

    /// One line per message, for failure messages: `peer <- first line (call-id)`.
    pub fn dump(&self) -> String {
        let mut entries = self.entries();
        entries.sort_by_key(|e| e.at);
        let t0 = entries
            .first()
            .map(|e| e.at)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let mut out = String::new();
        for e in entries {
            let ms = e.at.duration_since(t0).unwrap_or_default().as_secs_f64() * 1e3;
            let arrow = match e.dir {
                Dir::In => "<-",
                Dir::Out => "->",
            };
            let _ = writeln!(
                out,
                "{ms:9.3} ms  {:<10} {arrow} {:<40} [{}]",
                e.peer,
                e.first_line(),
                e.summary.call_id
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::independent_read;

    const OK: &str = "SIP/2.0 180 Ringing\r\nVia: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK-1\r\n\
                      From: <sip:a@192.0.2.1>;tag=a\r\nTo: <sip:b@192.0.2.2>;tag=b\r\n\
                      Call-ID: c1\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n";

    #[test]
    fn the_independent_parser_reads_a_good_message_and_names_what_it_cannot_read() {
        assert_eq!(independent_read(OK.as_bytes()), Ok(()));
        let no_cseq = OK.replace("CSeq: 1 INVITE\r\n", "");
        assert!(independent_read(no_cseq.as_bytes())
            .unwrap_err()
            .starts_with("CSeq"));
        let broken_via = OK.replace("SIP/2.0/UDP 192.0.2.1:5060", "garbage");
        assert!(independent_read(broken_via.as_bytes())
            .unwrap_err()
            .starts_with("Via"));
        assert!(independent_read(b"hello").is_err());
    }
}
