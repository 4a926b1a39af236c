//! A simulated carrier trunk: the UAC side. Tests (and the drill) decide what it sends — an
//! INVITE, a retransmission, a CANCEL, garbage — and it behaves as a UAC for the rest: it ACKs
//! every final response to its INVITEs (hop by hop for non-2xx, end to end along the route set
//! for 2xx), keeps the dialog of each answered call, answers requests from the far end with 200,
//! and hangs up with a BYE routed through pointsman.

use super::endpoint::{Endpoint, TlsClient};
use super::journal::{Dir, Journal};
use super::msg::{self, Dialog, InviteSpec};
use bytes::Bytes;
use pointsman_protocol::originate;
use pointsman_protocol::wire::Method;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;
use tokio::task::JoinHandle;

struct State {
    /// INVITEs sent, by Call-ID.
    invites: HashMap<String, Bytes>,
    /// Answered calls, by Call-ID (the first 2xx makes the dialog).
    dialogs: HashMap<String, Dialog>,
}

struct Inner {
    name: String,
    ep: Endpoint,
    proxy: SocketAddr,
    journal: Arc<Journal>,
    state: Mutex<State>,
}

impl Inner {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn send_to(&self, bytes: Bytes, to: SocketAddr) -> std::io::Result<()> {
        // Stamped before the send: whatever pointsman does in answer is stamped later.
        let at = SystemTime::now();
        self.ep.send(&bytes, to).await?;
        self.journal.record(&self.name, Dir::Out, to, bytes, at);
        Ok(())
    }
}

pub struct Carrier {
    inner: Arc<Inner>,
    task: JoinHandle<()>,
}

impl Carrier {
    fn start(name: &str, ep: Endpoint, proxy: SocketAddr, journal: Arc<Journal>) -> Carrier {
        let inner = Arc::new(Inner {
            name: name.to_string(),
            ep,
            proxy,
            journal,
            state: Mutex::new(State {
                invites: HashMap::new(),
                dialogs: HashMap::new(),
            }),
        });
        let task = tokio::spawn(serve(inner.clone()));
        Carrier { inner, task }
    }

    /// A carrier sending over UDP from `local` to pointsman at `proxy`.
    pub fn udp(
        name: &str,
        local: SocketAddr,
        proxy: SocketAddr,
        journal: Arc<Journal>,
    ) -> std::io::Result<Carrier> {
        Ok(Carrier::start(name, Endpoint::udp(local)?, proxy, journal))
    }

    /// A carrier with one TCP connection to pointsman at `proxy`.
    pub async fn tcp(
        name: &str,
        proxy: SocketAddr,
        journal: Arc<Journal>,
    ) -> std::io::Result<Carrier> {
        let ep = Endpoint::tcp_connect(proxy).await?;
        Ok(Carrier::start(name, ep, proxy, journal))
    }

    /// A carrier with one TLS connection to pointsman at `proxy` (the handshake done, with
    /// `client`'s trust and identity).
    pub async fn tls(
        name: &str,
        proxy: SocketAddr,
        client: TlsClient,
        journal: Arc<Journal>,
    ) -> std::io::Result<Carrier> {
        let ep = Endpoint::tls_connect(proxy, client).await?;
        Ok(Carrier::start(name, ep, proxy, journal))
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.inner.ep.local_addr()
    }

    /// An INVITE of this carrier for `call_id`, to be adjusted and sent with [`Carrier::invite`].
    pub fn invite_spec(&self, call_id: &str) -> InviteSpec {
        let mut spec = InviteSpec::new(call_id, self.inner.proxy, self.local_addr());
        spec.transport = self.inner.ep.transport();
        spec
    }

    /// Sends a new INVITE; returns its bytes (send them again to retransmit).
    pub async fn invite(&self, spec: &InviteSpec) -> std::io::Result<Bytes> {
        let bytes = spec.build(&msg::new_branch());
        self.inner
            .state()
            .invites
            .insert(spec.call_id.clone(), bytes.clone());
        self.send(bytes.clone()).await?;
        Ok(bytes)
    }

    /// Sends raw bytes to pointsman.
    pub async fn send(&self, bytes: Bytes) -> std::io::Result<()> {
        self.inner.send_to(bytes, self.inner.proxy).await
    }

    /// CANCELs the INVITE sent for `call_id`.
    pub async fn cancel(&self, call_id: &str) -> std::io::Result<()> {
        let invite = self.inner.state().invites.get(call_id).cloned();
        match invite.as_deref().and_then(msg::cancel_for) {
            Some(cancel) => self.send(cancel).await,
            None => Err(std::io::Error::other("no INVITE sent for this Call-ID")),
        }
    }

    /// Sends a request (BYE, INFO, ...) in the answered call `call_id`, along its route set.
    pub async fn in_dialog(&self, call_id: &str, method: &str) -> std::io::Result<()> {
        let built = {
            let mut st = self.inner.state();
            st.dialogs
                .get_mut(call_id)
                .and_then(|d| Some((d.request(method), d.next_hop()?)))
        };
        match built {
            Some((req, hop)) => self.inner.send_to(req, hop).await,
            None => Err(std::io::Error::other("no answered call with this Call-ID")),
        }
    }

    /// Hangs up the answered call `call_id`.
    pub async fn hang_up(&self, call_id: &str) -> std::io::Result<()> {
        self.in_dialog(call_id, "BYE").await
    }
}

impl Drop for Carrier {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(inner: Arc<Inner>) {
    while let Some(r) = inner.ep.recv().await {
        inner
            .journal
            .record(&inner.name, Dir::In, r.from, r.bytes.clone(), r.at);
        let Some(m) = msg::scan(&r.bytes) else {
            continue;
        };
        let call_id = String::from_utf8_lossy(m.slice(m.call_id)).into_owned();
        let reply = match (m.method(), m.code()) {
            (Some(Method::Ack), _) => None,
            (Some(_), _) => {
                if m.method() == Some(Method::Bye) {
                    inner.state().dialogs.remove(&call_id);
                }
                msg::response(&r.bytes, 200, "carrier", "").map(|b| (b, r.from))
            }
            (None, Some(code)) if code >= 200 && m.cseq_method == Method::Invite => {
                ack_final(&inner, &r.bytes, code, &call_id)
            }
            _ => None,
        };
        if let Some((bytes, to)) = reply {
            let _ = inner.send_to(bytes, to).await;
        }
    }
}

/// The ACK a UAC owes a final response to its INVITE, and where it goes.
fn ack_final(inner: &Inner, resp: &[u8], code: u16, call_id: &str) -> Option<(Bytes, SocketAddr)> {
    let mut st = inner.state();
    if code >= 300 {
        let invite = st.invites.get(call_id)?;
        let (inv, res) = (msg::scan(invite)?, msg::scan(resp)?);
        return Some((originate::ack_for_non_2xx(&inv, &res), inner.proxy));
    }
    let fresh = Dialog::uac(resp, inner.ep.local_addr(), inner.ep.transport())?;
    let dialog = st.dialogs.entry(call_id.to_string()).or_insert(fresh);
    let cseq = msg::scan(resp)?.cseq;
    Some((dialog.ack(cseq), dialog.next_hop()?))
}
