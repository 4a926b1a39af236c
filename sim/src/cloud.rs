//! A simulated cloud trunk: a UAS that answers every INVITE by a scripted [`Behaviour`] (answer,
//! reject, ring forever, stay silent, answer late without a provisional), and behaves as a real
//! UAS otherwise: it answers CANCEL with 200 and 487, retransmits its 2xx until ACKed, absorbs
//! INVITE retransmissions, answers BYE and other in-dialog requests with 200, and can end a call
//! itself with a BYE routed back through pointsman.
//!
//! With media ([`Cloud::with_media`]) every new INVITE gets a [`MediaPeer`] of its own: the
//! cloud's 183 and 2xx carry an SDP answer naming it, and the script can start, silence and stop
//! its RTP stream toward the address in the INVITE's SDP offer, or say goodbye with RTCP BYE.

use super::endpoint::{Endpoint, Received};
use super::journal::{Dir, Journal};
use super::msg::{self, Dialog};
use super::rtp::MediaPeer;
use bytes::Bytes;
use pointsman_protocol::wire::Method;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio::task::JoinHandle;

/// One step of the script a cloud plays for every new INVITE.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Send this response (a final one ends the script).
    Respond(u16),
    Wait(Duration),
    /// 183 with the SDP answer, and RTP starts toward the offer's address (media clouds only).
    EarlyMedia,
    /// The RTP stream goes silent; the dialog lives on.
    MediaPause,
    /// The RTP stream ends for good; the dialog lives on.
    MediaStop,
    /// The stream ends with an RTCP BYE (RR+BYE) to the offer's RTCP address.
    RtcpBye,
}

/// How a cloud treats each new INVITE.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Behaviour {
    pub steps: Vec<Step>,
    /// Ignore CANCEL (an overloaded server that answers from a backlog): the script plays on.
    pub deaf_to_cancel: bool,
    /// Seconds of `Retry-After` on its 503s.
    pub retry_after: Option<u32>,
}

const BEAT: Duration = Duration::from_millis(20);

impl Behaviour {
    /// 100, 180, then 200.
    pub fn answer() -> Behaviour {
        Behaviour::answer_after(BEAT)
    }
    /// 100, 180, then 200 after ringing for `ring`.
    pub fn answer_after(ring: Duration) -> Behaviour {
        use Step::*;
        Behaviour::of(vec![
            Respond(100),
            Wait(BEAT),
            Respond(180),
            Wait(ring),
            Respond(200),
        ])
    }
    /// 100, then the final `code`.
    pub fn reject(code: u16) -> Behaviour {
        use Step::*;
        Behaviour::of(vec![Respond(100), Wait(BEAT), Respond(code)])
    }
    /// 100, 180, then the final `code` (the callee rang).
    pub fn ring_then(code: u16) -> Behaviour {
        use Step::*;
        Behaviour::of(vec![Respond(100), Respond(180), Wait(BEAT), Respond(code)])
    }
    /// 100, 180, and nothing more.
    pub fn ring_forever() -> Behaviour {
        use Step::*;
        Behaviour::of(vec![Respond(100), Respond(180)])
    }
    /// Nothing at all: a dead or black-holed destination.
    pub fn silent() -> Behaviour {
        Behaviour::of(Vec::new())
    }
    /// Brownout: no provisional, then a 200 after `delay`, whatever CANCEL came meanwhile
    /// (the CANCEL sits in the same backlog as the INVITE did).
    pub fn brownout(delay: Duration) -> Behaviour {
        Behaviour {
            deaf_to_cancel: true,
            retry_after: None,
            ..Behaviour::of(vec![Step::Wait(delay), Step::Respond(200)])
        }
    }
    /// 100, then 503 with `Retry-After: secs`.
    pub fn overloaded(secs: u32) -> Behaviour {
        Behaviour {
            retry_after: Some(secs),
            ..Behaviour::reject(503)
        }
    }
    /// 100, 183 with SDP and early media, then `steps`.
    pub fn early_media_then(steps: Vec<Step>) -> Behaviour {
        let mut all = vec![Step::Respond(100), Step::EarlyMedia];
        all.extend(steps);
        Behaviour::of(all)
    }
    /// 100, 183 with SDP and early media for `ring`, then 200 (the stream goes on).
    pub fn early_media_answer_after(ring: Duration) -> Behaviour {
        Behaviour::early_media_then(vec![Step::Wait(ring), Step::Respond(200)])
    }
    /// A script that honours CANCEL.
    pub fn of(steps: Vec<Step>) -> Behaviour {
        Behaviour {
            steps,
            deaf_to_cancel: false,
            retry_after: None,
        }
    }
}

/// One INVITE server transaction of the cloud.
struct UasCall {
    invite: Bytes,
    call_id: String,
    to_tag: String,
    peer: SocketAddr,
    /// Where the INVITE's SDP offer wants RTP and RTCP.
    offer_media: Option<SocketAddr>,
    offer_rtcp: Option<SocketAddr>,
    last: Option<Bytes>,
    final_code: Option<u16>,
    acked: bool,
}

struct State {
    behaviour: Behaviour,
    /// By the INVITE's branch.
    calls: HashMap<String, UasCall>,
    /// Answered dialogs by Call-ID.
    dialogs: HashMap<String, Dialog>,
    next_tag: u64,
    /// What an out-of-dialog OPTIONS gets: this code, or no answer at all.
    options_reply: Option<u16>,
    /// Media peers are bound on this IP and mark their payloads with this branch id.
    media: Option<(IpAddr, u8)>,
    /// Each call's media peer, by Call-ID (kept after the call for what it heard).
    peers: HashMap<String, Arc<MediaPeer>>,
}

struct Inner {
    name: String,
    ep: Endpoint,
    journal: Arc<Journal>,
    state: Mutex<State>,
}

impl Inner {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn send(&self, bytes: Bytes, to: SocketAddr) {
        // Stamped before the send: whatever pointsman does in answer is stamped later.
        let at = SystemTime::now();
        if self.ep.send(&bytes, to).await.is_ok() {
            self.journal.record(&self.name, Dir::Out, to, bytes, at);
        }
    }

    fn contact(&self) -> String {
        let tp = match self.ep.transport() {
            msg::SimTransport::Udp => "",
            msg::SimTransport::Tcp => ";transport=tcp",
            msg::SimTransport::Tls => ";transport=tls",
        };
        format!("sip:agent@{}{tp}", self.ep.local_addr())
    }
}

/// A running simulated cloud. Dropping it closes its socket.
pub struct Cloud {
    inner: Arc<Inner>,
    task: JoinHandle<()>,
}

impl Cloud {
    /// Starts a cloud on `ep` (call inside a tokio runtime).
    pub fn start(name: &str, ep: Endpoint, behaviour: Behaviour, journal: Arc<Journal>) -> Cloud {
        let inner = Arc::new(Inner {
            name: name.to_string(),
            ep,
            journal,
            state: Mutex::new(State {
                behaviour,
                calls: HashMap::new(),
                dialogs: HashMap::new(),
                next_tag: 1,
                options_reply: Some(200),
                media: None,
                peers: HashMap::new(),
            }),
        });
        let task = tokio::spawn(serve(inner.clone()));
        Cloud { inner, task }
    }

    /// A UDP cloud on `addr`.
    pub fn udp(
        name: &str,
        addr: SocketAddr,
        behaviour: Behaviour,
        journal: Arc<Journal>,
    ) -> std::io::Result<Cloud> {
        Ok(Cloud::start(name, Endpoint::udp(addr)?, behaviour, journal))
    }

    pub fn addr(&self) -> SocketAddr {
        self.inner.ep.local_addr()
    }

    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// From now on each new INVITE gets its own [`MediaPeer`] on `ip`, marking its payloads
    /// with `branch_id`.
    pub fn with_media(self, ip: IpAddr, branch_id: u8) -> Cloud {
        self.set_media(Some((ip, branch_id)));
        self
    }

    /// [`Cloud::with_media`] on a running cloud; `None` turns media off for new INVITEs.
    pub fn set_media(&self, media: Option<(IpAddr, u8)>) {
        self.inner.state().media = media;
    }

    /// The media peer of the call `call_id`, if the cloud had media when the INVITE came.
    pub fn media(&self, call_id: &str) -> Option<Arc<MediaPeer>> {
        self.inner.state().peers.get(call_id).cloned()
    }

    /// Changes what new INVITEs get.
    pub fn set_behaviour(&self, behaviour: Behaviour) {
        self.inner.state().behaviour = behaviour;
    }

    /// Changes what out-of-dialog OPTIONS (health probes) get: `Some(code)` answers with that
    /// code (default 200), `None` answers nothing, as a dead or black-holed peer would.
    pub fn set_options_reply(&self, reply: Option<u16>) {
        self.inner.state().options_reply = reply;
    }

    /// Ends an answered call from the cloud's side: a BYE along the dialog's route set.
    pub async fn hang_up(&self, call_id: &str) -> bool {
        let built = {
            let mut st = self.inner.state();
            st.dialogs.get_mut(call_id).and_then(|d| {
                let bye = d.request("BYE");
                d.next_hop().map(|hop| (bye, hop))
            })
        };
        match built {
            Some((bye, hop)) => {
                self.inner.send(bye, hop).await;
                true
            }
            None => false,
        }
    }
}

impl Cloud {
    /// The cloud dies: its socket closes now (calls to it bounce) and it answers nothing more.
    pub async fn stop(self) {
        self.task.abort();
        self.inner.ep.close().await;
    }
}

impl Drop for Cloud {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(inner: Arc<Inner>) {
    while let Some(r) = inner.ep.recv().await {
        inner
            .journal
            .record(&inner.name, Dir::In, r.from, r.bytes.clone(), r.at);
        on_message(&inner, r).await;
    }
}

async fn on_message(inner: &Arc<Inner>, r: Received) {
    let Some(m) = msg::scan(&r.bytes) else { return };
    let Some(method) = m.method() else {
        return; // responses (to the cloud's own BYE) are only journaled
    };
    let branch = m
        .top_via
        .branch
        .map(|b| String::from_utf8_lossy(m.slice(b)).into_owned())
        .unwrap_or_default();
    let call_id = String::from_utf8_lossy(m.slice(m.call_id)).into_owned();
    let in_dialog = m.to.tag.is_some();
    match method {
        Method::Invite if !in_dialog => on_invite(inner, r, branch, call_id).await,
        Method::Options if !in_dialog => {
            let reply = inner.state().options_reply;
            let contact = inner.contact();
            let resp = reply.and_then(|code| msg::response(&r.bytes, code, "options", &contact));
            if let Some(resp) = resp {
                inner.send(resp, r.from).await;
            }
        }
        Method::Ack => {
            let mut st = inner.state();
            for c in st.calls.values_mut().filter(|c| c.call_id == call_id) {
                c.acked = true;
            }
        }
        Method::Cancel if inner.state().behaviour.deaf_to_cancel => {}
        Method::Cancel => {
            let (ok, terminated) = {
                let mut guard = inner.state();
                let st = &mut *guard;
                match st.calls.get_mut(&branch) {
                    Some(c) => {
                        let terminated = if c.final_code.is_none() {
                            c.final_code = Some(487);
                            if let Some(peer) = st.peers.get(&c.call_id) {
                                peer.stop();
                            }
                            let resp = msg::response(&c.invite, 487, &c.to_tag, "");
                            c.last = resp.clone();
                            resp.map(|b| (b, c.peer))
                        } else {
                            None
                        };
                        (msg::response(&r.bytes, 200, &c.to_tag, ""), terminated)
                    }
                    None => (msg::response(&r.bytes, 481, "x", ""), None),
                }
            };
            if let Some(ok) = ok {
                inner.send(ok, r.from).await;
            }
            if let Some((resp, peer)) = terminated {
                inner.send(resp, peer).await;
            }
        }
        _ => {
            if method == Method::Bye {
                let mut st = inner.state();
                st.dialogs.remove(&call_id);
                if let Some(peer) = st.peers.get(&call_id) {
                    peer.stop();
                }
            }
            let contact = inner.contact();
            if let Some(ok) = msg::response(&r.bytes, 200, "indialog", &contact) {
                inner.send(ok, r.from).await;
            }
        }
    }
}

async fn on_invite(inner: &Arc<Inner>, r: Received, branch: String, call_id: String) {
    let (retransmit, steps) = {
        let mut st = inner.state();
        if let Some(c) = st.calls.get(&branch) {
            (c.last.clone().map(|b| (b, c.peer)), None)
        } else {
            let to_tag = format!("{}-{}", inner.name, st.next_tag);
            st.next_tag += 1;
            let offer = msg::body(&r.bytes);
            let (offer_media, offer_rtcp) = (msg::sdp_media_addr(offer), msg::sdp_rtcp_addr(offer));
            if let Some((ip, branch_id)) = st.media {
                if !st.peers.contains_key(&call_id) {
                    // A peer that cannot bind leaves the call without media: the test sees no
                    // SDP in the answer rather than a cloud that stops answering.
                    if let Ok(peer) = MediaPeer::bind(ip, branch_id) {
                        st.peers.insert(call_id.clone(), peer);
                    }
                }
            }
            st.calls.insert(
                branch.clone(),
                UasCall {
                    invite: r.bytes.clone(),
                    call_id,
                    to_tag,
                    peer: r.from,
                    offer_media,
                    offer_rtcp,
                    last: None,
                    final_code: None,
                    acked: false,
                },
            );
            (None, Some(st.behaviour.steps.clone()))
        }
    };
    if let Some((last, peer)) = retransmit {
        inner.send(last, peer).await;
    }
    if let Some(steps) = steps {
        tokio::spawn(play(inner.clone(), branch, steps));
    }
}

/// Plays the script for one INVITE; stops once a final response went (its own or a 487).
async fn play(inner: Arc<Inner>, branch: String, steps: Vec<Step>) {
    let retry_after = inner.state().behaviour.retry_after;
    for step in steps {
        let code = match step {
            Step::Wait(d) => {
                tokio::time::sleep(d).await;
                continue;
            }
            Step::Respond(code) => code,
            Step::EarlyMedia => 183,
            Step::MediaPause | Step::MediaStop | Step::RtcpBye => {
                let (peer, rtcp) = {
                    let st = inner.state();
                    let Some(c) = st.calls.get(&branch) else {
                        return;
                    };
                    (st.peers.get(&c.call_id).cloned(), c.offer_rtcp)
                };
                if let Some(peer) = peer {
                    match step {
                        Step::MediaPause => peer.pause(),
                        Step::MediaStop => peer.stop(),
                        _ => {
                            peer.stop();
                            if let Some(rtcp) = rtcp {
                                let _ = peer.send_rtcp_bye(rtcp).await;
                            }
                        }
                    }
                }
                continue;
            }
        };
        let contact = inner.contact();
        let sent = {
            let mut guard = inner.state();
            let st = &mut *guard;
            let Some(c) = st.calls.get_mut(&branch) else {
                return;
            };
            if c.final_code.is_some() {
                return;
            }
            let extra = match (code, retry_after) {
                (503, Some(secs)) => format!("Retry-After: {secs}\r\n"),
                _ => String::new(),
            };
            // A media cloud's 183 and 2xx carry its answer; its stream starts with the first
            // of them (if the script has not stopped it) and ends with a failure.
            let peer = st.peers.get(&c.call_id);
            let with_sdp = code == 183 || (200..300).contains(&code);
            let resp = match peer {
                Some(peer) if with_sdp => {
                    let sdp = msg::sdp_answer(peer.local_addr());
                    if let Some(to) = c.offer_media {
                        if step == Step::EarlyMedia || (code >= 200 && !peer.started()) {
                            peer.start(to);
                        }
                    }
                    msg::response_with_sdp(&c.invite, code, &c.to_tag, &contact, &extra, &sdp)
                }
                _ => {
                    if let (Some(peer), true) = (peer, code >= 300) {
                        peer.stop();
                    }
                    msg::response_with(&c.invite, code, &c.to_tag, &contact, &extra)
                }
            };
            let Some(resp) = resp else {
                return;
            };
            c.last = Some(resp.clone());
            if code >= 200 {
                c.final_code = Some(code);
            }
            let (invite, tag, peer, call_id) = (
                c.invite.clone(),
                c.to_tag.clone(),
                c.peer,
                c.call_id.clone(),
            );
            if (200..300).contains(&code) {
                let dialog =
                    Dialog::uas(&invite, &tag, inner.ep.local_addr(), inner.ep.transport());
                if let Some(d) = dialog {
                    st.dialogs.insert(call_id, d);
                }
            }
            (resp, peer)
        };
        inner.send(sent.0.clone(), sent.1).await;
        if (200..300).contains(&code) {
            tokio::spawn(retransmit_2xx(
                inner.clone(),
                branch.clone(),
                sent.0,
                sent.1,
            ));
        }
        if code >= 200 {
            return;
        }
    }
}

/// RFC 3261 §13.3.1.4: the 2xx goes again at T1, 2·T1, ... (capped at T2) until the ACK comes,
/// for at most 64·T1.
async fn retransmit_2xx(inner: Arc<Inner>, branch: String, resp: Bytes, peer: SocketAddr) {
    if inner.ep.transport() != msg::SimTransport::Udp {
        return;
    }
    let (t1, t2) = (Duration::from_millis(500), Duration::from_secs(4));
    let mut interval = t1;
    let mut waited = Duration::ZERO;
    while waited < t1 * 64 {
        tokio::time::sleep(interval).await;
        waited += interval;
        let acked = inner.state().calls.get(&branch).is_none_or(|c| c.acked);
        if acked {
            return;
        }
        inner.send(resp.clone(), peer).await;
        interval = (interval * 2).min(t2);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{analyse, Carrier, PTIME};

    /// A carrier calls a media cloud directly (no proxy between): the 183 and the 200 name the
    /// cloud's media peer, its stream reaches the carrier's peer, pauses, and ends with RTCP BYE.
    #[tokio::test]
    async fn a_media_cloud_plays_early_media_pauses_and_says_bye() {
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let journal = Arc::new(Journal::default());
        let script = Behaviour::early_media_then(vec![
            Step::Wait(Duration::from_millis(200)),
            Step::MediaPause,
            Step::Wait(Duration::from_millis(100)),
            Step::Respond(200),
            Step::Wait(Duration::from_millis(100)),
            Step::RtcpBye,
        ]);
        let cloud = Cloud::udp(
            "cloud",
            "127.0.0.1:0".parse().unwrap(),
            script,
            journal.clone(),
        )
        .unwrap()
        .with_media(ip, 7);
        let carrier = Carrier::udp(
            "carrier",
            "127.0.0.1:0".parse().unwrap(),
            cloud.addr(),
            journal.clone(),
        )
        .unwrap();
        let ear = MediaPeer::bind(ip, 1).unwrap();
        let mut spec = carrier.invite_spec("media-1");
        spec.media = Some(ear.local_addr());
        carrier.invite(&spec).await.unwrap();
        tokio::time::sleep(Duration::from_millis(600)).await;

        let peer = cloud.media("media-1").expect("the call got a media peer");
        let answers: Vec<_> = journal
            .received("carrier")
            .into_iter()
            .filter(|e| matches!(e.summary.code, Some(183 | 200)))
            .collect();
        assert_eq!(answers.len(), 2, "{}", journal.dump());
        for a in &answers {
            assert_eq!(
                msg::sdp_media_addr(msg::body(&a.bytes)),
                Some(peer.local_addr())
            );
        }
        // The 200 did not restart the paused stream; RTCP went to the offer's port + 1.
        let heard = ear.heard();
        assert!((8..=13).contains(&heard.len()), "{} packets", heard.len());
        assert!(heard
            .iter()
            .all(|h| h.branch == Some(7) && h.from == peer.local_addr()));
        let a = analyse(&heard, PTIME);
        assert!(
            a.switches.is_empty() && a.seq_continuous && a.ssrc_constant,
            "{a:?}"
        );
        assert!(!peer.is_streaming());
        assert_eq!(
            ear.rtcp_heard(),
            0,
            "RTCP goes to port + 1, not the RTP port"
        );
    }

    #[tokio::test]
    async fn a_media_clouds_stream_goes_on_after_the_answer() {
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let journal = Arc::new(Journal::default());
        let cloud = Cloud::udp(
            "cloud",
            "127.0.0.1:0".parse().unwrap(),
            Behaviour::answer(),
            journal.clone(),
        )
        .unwrap()
        .with_media(ip, 2);
        let carrier = Carrier::udp(
            "carrier",
            "127.0.0.1:0".parse().unwrap(),
            cloud.addr(),
            journal.clone(),
        )
        .unwrap();
        let ear = MediaPeer::bind(ip, 1).unwrap();
        let mut spec = carrier.invite_spec("media-2");
        spec.media = Some(ear.local_addr());
        carrier.invite(&spec).await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        let heard = ear.heard();
        assert!(
            heard.len() >= 8,
            "a plain answer starts the stream: {}",
            heard.len()
        );
        assert!(heard[0].marker);
        carrier.hang_up("media-2").await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(
            !cloud.media("media-2").unwrap().is_streaming(),
            "BYE ends it"
        );
    }
}
