//! Tests of the node link over real QUIC sockets on 127.0.0.1, with certificates made here by
//! rcgen. A silent peer is made silent by a UDP relay between the two nodes that stops
//! forwarding (nothing is killed or paused, so nothing can hang); every wait has a timeout.

use super::backoff::Backoff;
use super::wire::{encode, pack, read_frame, unpack, PACK_MIN};
use super::*;
use crate::transport::tls::tests::Ca;
use std::time::Instant;
use tokio::net::UdpSocket;
use tokio::time::timeout;

/// A node's link identity from `ca` (for 127.0.0.1), trusting `trust` for its peers.
fn identity(ca: &Ca, trust: &Ca) -> LinkTls {
    use rustls::pki_types::pem::PemObject;
    let (cert, key) = ca.node("127.0.0.1");
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(trust.pem.as_bytes()).unwrap())
        .unwrap();
    LinkTls {
        certs: vec![CertificateDer::from_pem_slice(cert.as_bytes()).unwrap()],
        key: PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap(),
        roots: Arc::new(roots),
    }
}

const DEAD_AFTER: Duration = Duration::from_secs(1);
/// What "a little" after `dead_after` may be.
const SLACK: Duration = Duration::from_millis(500);
const ANY: &str = "127.0.0.1:0";

fn config(node_id: u16, peers: &[(u16, SocketAddr)]) -> LinkConfig {
    LinkConfig {
        node_id,
        listen: ANY.parse().unwrap(),
        peers: peers
            .iter()
            .map(|&(id, address)| PeerAddr {
                id,
                address,
                backup: None,
            })
            .collect(),
        dead_after: DEAD_AFTER,
        queue: DEFAULT_QUEUE,
        max_frame: DEFAULT_MAX_FRAME,
        batch: DEFAULT_BATCH,
    }
}

/// The acceptor (node 2) first, so the dialer (node 1) knows its port; `via` puts a relay
/// address in node 1's config instead.
fn pair_with(
    ca: &Ca,
    tweak_1: impl FnOnce(&mut LinkConfig),
    tweak_2: impl FnOnce(&mut LinkConfig),
    via: Option<SocketAddr>,
) -> (Link, Link) {
    let mut c2 = config(2, &[(1, ANY.parse().unwrap())]);
    tweak_2(&mut c2);
    let two = Link::start(c2, identity(ca, ca)).unwrap();
    let to_two = via.unwrap_or(two.local_addr().unwrap());
    let mut c1 = config(1, &[(2, to_two)]);
    tweak_1(&mut c1);
    let one = Link::start(c1, identity(ca, ca)).unwrap();
    (one, two)
}

async fn next(events: &mut mpsc::Receiver<LinkEvent>, within: Duration) -> LinkEvent {
    timeout(within, events.recv())
        .await
        .expect("no link event in time")
        .expect("events closed")
}

/// Both sides up, their receivers returned.
async fn up(one: &Link, two: &Link) -> (mpsc::Receiver<LinkEvent>, mpsc::Receiver<LinkEvent>) {
    let mut e1 = one.events().unwrap();
    let mut e2 = two.events().unwrap();
    up_again(&mut e1, &mut e2, Duration::from_secs(5)).await;
    (e1, e2)
}

#[test]
fn backoff_doubles_from_100ms_to_2s_and_resets() {
    let mut b = Backoff::default();
    let ms: Vec<u128> = (0..7).map(|_| b.next_delay().as_millis()).collect();
    assert_eq!(ms, [100, 200, 400, 800, 1600, 2000, 2000]);
    b.reset();
    assert_eq!(b.next_delay(), Duration::from_millis(100));
}

#[tokio::test]
async fn frames_round_trip_and_a_length_over_the_bound_is_refused_unread() {
    let frame = Frame::Forward {
        bytes: b"INVITE sip:a@b SIP/2.0\r\n\r\n".to_vec(),
        from: "192.0.2.1:5060".parse().unwrap(),
        listener: 3,
        received: Some(1_796_621_672_554_058_000),
    };
    let mut bytes = encode(&frame).unwrap();
    bytes.extend(encode(&Frame::Replicate(vec![1, 2, 3])).unwrap());
    let mut r = &bytes[..];
    assert_eq!(read_frame(&mut r, 1024).await.unwrap(), Some(frame));
    assert_eq!(
        read_frame(&mut r, 1024).await.unwrap(),
        Some(Frame::Replicate(vec![1, 2, 3]))
    );
    assert_eq!(read_frame(&mut r, 1024).await.unwrap(), None);

    // 4 GiB announced: refused from the prefix alone.
    let mut huge: &[u8] = &[0xff, 0xff, 0xff, 0xff, b'{'];
    assert!(matches!(
        read_frame(&mut huge, 1024).await,
        Err(FrameError::TooLarge {
            len: 0xffff_ffff,
            max: 1024
        })
    ));
    let mut junk: &[u8] = &[0, 0, 0, 2, b'{', b'!'];
    assert!(matches!(
        read_frame(&mut junk, 1024).await,
        Err(FrameError::Decode(_))
    ));
}

/// Two linked nodes, 1's writer to 2 gathering: its batch is far longer than any test (a frame
/// that waits for it never arrives in time), and a first frame after the quiet spell went at
/// once. Returns the nodes and their events.
async fn gathering() -> (
    Link,
    Link,
    mpsc::Receiver<LinkEvent>,
    mpsc::Receiver<LinkEvent>,
) {
    let ca = Ca::new("link ca");
    let (one, two) = pair_with(&ca, |c| c.batch = Duration::from_secs(60), |_| {}, None);
    let (e1, mut e2) = up(&one, &two).await;
    one.send(2, Frame::Replicate(vec![0])).unwrap();
    assert_eq!(
        next(&mut e2, Duration::from_secs(2)).await,
        LinkEvent::Frame(1, Frame::Replicate(vec![0]))
    );
    (one, two, e1, e2)
}

/// A call's replica as the bench's calls look: SIP text that differs between calls only in
/// its numbers.
fn replica(n: u32) -> Frame {
    Frame::Confirm {
        seq: u64::from(n),
        bytes: format!(
            "INVITE sip:+1555123{n}@198.18.0.10:5060 SIP/2.0\r\nVia: SIP/2.0/UDP \
             198.18.1.10:5060;branch=z9hG4bK-{n}\r\nFrom: \"Carrier\" \
             <sip:+15559870000@198.18.1.10:5060>;tag={n}SIPpTag00\r\nTo: \
             <sip:+1555123{n}@198.18.0.10:5060>\r\nCall-ID: {n}-carrier@198.18.1.10\r\n\
             CSeq: 1 INVITE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
        )
        .into_bytes(),
    }
}

#[tokio::test]
async fn a_batch_of_calls_packs_to_a_fraction_and_unpacks_to_the_same_frames_in_order() {
    let frames: Vec<Frame> = (0..8).map(replica).collect();
    let encoded: Vec<u8> = frames.iter().flat_map(|f| encode(f).unwrap()).collect();
    let packed = pack(&encoded, DEFAULT_MAX_FRAME).expect("a batch of calls is worth packing");
    assert!(
        packed.len() * 3 < encoded.len(),
        "{} bytes packed from {}",
        packed.len(),
        encoded.len()
    );
    let mut r = &packed[..];
    let Some(Frame::Packed { len, lz4 }) = read_frame(&mut r, 1 << 20).await.unwrap() else {
        panic!("not a packed frame");
    };
    assert_eq!(unpack(len, &lz4, DEFAULT_MAX_FRAME).unwrap(), frames);
    // Below PACK_MIN, or past what the peer reads, it goes as it is.
    let one = encode(&Frame::Confirmed(vec![1, 2])).unwrap();
    assert!(one.len() < PACK_MIN && pack(&one, DEFAULT_MAX_FRAME).is_none());
    assert!(pack(&encoded, encoded.len() - 1).is_none());
}

#[test]
fn a_packed_frame_that_lies_is_refused_before_its_content_is_trusted() {
    let frames: Vec<Frame> = (0..8).map(replica).collect();
    let encoded: Vec<u8> = frames.iter().flat_map(|f| encode(f).unwrap()).collect();
    let lz4 = lz4_flex::block::compress(&encoded);
    let len = encoded.len() as u32;
    // Content announced past the bound: refused before anything is allocated for it.
    assert!(matches!(
        unpack(u32::MAX, &lz4, 1 << 20),
        Err(FrameError::TooLarge {
            len: 0xffff_ffff,
            ..
        })
    ));
    // Announced shorter or longer than what is inside.
    assert!(matches!(
        unpack(len - 1, &lz4, 1 << 20),
        Err(FrameError::Packed(_))
    ));
    assert!(matches!(
        unpack(len + 1, &lz4, 1 << 20),
        Err(FrameError::Packed(_))
    ));
    // Not LZ4.
    assert!(matches!(
        unpack(64, &[0xff; 16], 1 << 20),
        Err(FrameError::Packed(_))
    ));
    // A frame cut short inside.
    let cut = &encoded[..encoded.len() - 3];
    let e = unpack(cut.len() as u32, &lz4_flex::block::compress(cut), 1 << 20);
    assert!(matches!(e, Err(FrameError::Packed(_))), "{e:?}");
    // Packed inside packed, and a Hello inside: refused, not followed.
    for inner in [
        Frame::Packed {
            len,
            lz4: lz4.clone(),
        },
        Frame::Hello {
            node_id: 1,
            epoch: 1,
        },
    ] {
        let bytes = encode(&inner).unwrap();
        let e = unpack(
            bytes.len() as u32,
            &lz4_flex::block::compress(&bytes),
            1 << 20,
        );
        assert!(matches!(e, Err(FrameError::Packed(_))), "{e:?}");
    }
}

#[tokio::test]
async fn a_batch_goes_packed_over_the_link_and_arrives_as_its_frames_in_order() {
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    let _guard = metrics::set_default_local_recorder(&recorder);
    let sent = || {
        let text = handle.render();
        text.lines()
            .find_map(|l| l.strip_prefix("pointsman_link_sent_bytes_total{peer=\"2\"} "))
            .and_then(|v| v.trim().parse::<usize>().ok())
            .unwrap_or_else(|| panic!("no bytes sent to peer 2: {text}"))
    };
    let (one, _two, _e1, mut e2) = gathering().await;
    let second = Duration::from_secs(2);
    let before = sent();
    for n in 1..=16 {
        one.send(2, replica(n)).unwrap();
    }
    one.send(2, Frame::Confirmed(vec![99])).unwrap();
    for n in 1..=16 {
        assert_eq!(next(&mut e2, second).await, LinkEvent::Frame(1, replica(n)));
    }
    assert_eq!(
        next(&mut e2, second).await,
        LinkEvent::Frame(1, Frame::Confirmed(vec![99]))
    );
    // What went on the wire is a fraction of the frames' own encodings.
    let plain: usize = (1..=16).map(|n| encode(&replica(n)).unwrap().len()).sum();
    let wire = sent() - before;
    assert!(
        wire * 3 < plain,
        "{wire} bytes on the link for {plain} of frames"
    );
    assert_eq!(one.dropped(2), 0);
}

#[tokio::test]
async fn two_links_connect_and_exchange_frames_both_ways() {
    let ca = Ca::new("link ca");
    let (one, two) = pair_with(&ca, |_| {}, |_| {}, None);
    let (mut e1, mut e2) = up(&one, &two).await;
    assert!(one.is_up(2) && two.is_up(1));
    for n in 0..100u8 {
        one.send(2, Frame::Replicate(vec![n])).unwrap();
        two.send(1, Frame::Replicate(vec![n, n])).unwrap();
    }
    for n in 0..100u8 {
        let second = Duration::from_secs(1);
        assert_eq!(
            next(&mut e2, second).await,
            LinkEvent::Frame(1, Frame::Replicate(vec![n]))
        );
        assert_eq!(
            next(&mut e1, second).await,
            LinkEvent::Frame(2, Frame::Replicate(vec![n, n]))
        );
    }
    assert_eq!(
        one.send(9, Frame::Replicate(vec![])),
        Err(SendError::UnknownPeer)
    );
    assert_eq!(one.dropped(2), 0);
}

#[tokio::test]
async fn under_load_frames_wait_for_the_batch_and_an_urgent_frame_takes_them_along_in_order() {
    // After a quiet spell the first frame goes at once (in `gathering`).
    let (one, _two, _e1, mut e2) = gathering().await;
    let second = Duration::from_secs(2);
    // The writer now gathers: the next frames wait for the batch.
    one.send(2, Frame::Replicate(vec![2])).unwrap();
    one.send(
        2,
        Frame::Confirm {
            seq: 7,
            bytes: vec![3],
        },
    )
    .unwrap();
    assert!(
        timeout(Duration::from_millis(300), e2.recv())
            .await
            .is_err(),
        "a frame nothing waits on went before its batch"
    );
    // A datagram for its owner must not wait: it goes at once, with what waited before it.
    let forward = Frame::Forward {
        bytes: b"SIP/2.0 180 Ringing\r\n\r\n".to_vec(),
        from: "192.0.2.1:5060".parse().unwrap(),
        listener: 0,
        received: None,
    };
    one.send(2, forward.clone()).unwrap();
    assert_eq!(
        next(&mut e2, second).await,
        LinkEvent::Frame(1, Frame::Replicate(vec![2]))
    );
    assert_eq!(
        next(&mut e2, second).await,
        LinkEvent::Frame(
            1,
            Frame::Confirm {
                seq: 7,
                bytes: vec![3]
            }
        )
    );
    assert_eq!(next(&mut e2, second).await, LinkEvent::Frame(1, forward));
    // Confirmations are urgent too: the peer's calls wait on them.
    one.send(2, Frame::Replicate(vec![4])).unwrap();
    one.send(2, Frame::Confirmed(vec![7, 8])).unwrap();
    assert_eq!(
        next(&mut e2, second).await,
        LinkEvent::Frame(1, Frame::Replicate(vec![4]))
    );
    assert_eq!(
        next(&mut e2, second).await,
        LinkEvent::Frame(1, Frame::Confirmed(vec![7, 8]))
    );
    assert_eq!(one.dropped(2), 0);
}

#[tokio::test]
async fn frames_past_a_full_batch_go_at_once_not_after_the_next_batch() {
    let ca = Ca::new("link ca");
    let (one, two) = pair_with(&ca, |c| c.batch = Duration::from_secs(60), |_| {}, None);
    let (_e1, mut e2) = up(&one, &two).await;
    // Queued before the writer runs (this test's runtime has one thread): far more than one
    // write takes.
    let count = 3 * WRITE_BATCH + 5;
    for n in 0..count {
        one.send(2, Frame::Replicate(n.to_be_bytes().to_vec()))
            .unwrap();
    }
    for n in 0..count {
        assert_eq!(
            next(&mut e2, Duration::from_secs(2)).await,
            LinkEvent::Frame(1, Frame::Replicate(n.to_be_bytes().to_vec())),
            "frame {n}"
        );
    }
}

#[tokio::test]
async fn a_frame_over_the_bound_closes_the_link_with_a_reason() {
    let ca = Ca::new("link ca");
    let (one, two) = pair_with(&ca, |c| c.max_frame = 1024, |_| {}, None);
    let (mut e1, mut e2) = up(&one, &two).await;
    two.send(1, Frame::Replicate(vec![7; 4096])).unwrap();
    match next(&mut e1, Duration::from_secs(2)).await {
        LinkEvent::Down(2, DownReason::FrameTooLarge { len }) => assert!(len > 4096),
        other => panic!("expected frame-too-large down, got {other:?}"),
    }
    assert_eq!(
        next(&mut e2, Duration::from_secs(2)).await,
        LinkEvent::Down(1, DownReason::Closed("frame too large".into()))
    );
    // The dialer comes back; the link carries small frames again.
    up_again(&mut e1, &mut e2, Duration::from_secs(5)).await;
    two.send(1, Frame::Replicate(vec![1])).unwrap();
    assert_eq!(
        next(&mut e1, Duration::from_secs(2)).await,
        LinkEvent::Frame(2, Frame::Replicate(vec![1]))
    );
}

#[tokio::test]
async fn a_peer_whose_certificate_is_not_from_the_ca_is_refused() {
    let ca = Ca::new("link ca");
    let stranger = Ca::new("another ca");
    let two = Link::start(config(2, &[(1, ANY.parse().unwrap())]), identity(&ca, &ca)).unwrap();
    // Node 1 trusts the link CA but its own certificate is from another one.
    let one = Link::start(
        config(1, &[(2, two.local_addr().unwrap())]),
        identity(&stranger, &ca),
    )
    .unwrap();
    let (mut e1, mut e2) = (one.events().unwrap(), two.events().unwrap());
    let wait = Duration::from_millis(1500);
    assert!(
        timeout(wait, e2.recv()).await.is_err(),
        "acceptor saw an event"
    );
    assert!(
        timeout(wait, e1.recv()).await.is_err(),
        "dialer saw an event"
    );
    assert!(!one.is_up(2) && !two.is_up(1));
}

#[tokio::test]
async fn a_node_that_is_not_a_lower_id_peer_is_refused() {
    let ca = Ca::new("link ca");
    // Node 2 knows only node 3 (which it would dial): node 1 is nobody to it.
    let two = Link::start(
        config(2, &[(3, "127.0.0.1:9".parse().unwrap())]),
        identity(&ca, &ca),
    )
    .unwrap();
    let one = Link::start(
        config(1, &[(2, two.local_addr().unwrap())]),
        identity(&ca, &ca),
    )
    .unwrap();
    let mut e1 = one.events().unwrap();
    let wait = Duration::from_millis(1500);
    assert!(
        timeout(wait, e1.recv()).await.is_err(),
        "dialer saw an event"
    );
    assert!(!one.is_up(2));
}

#[tokio::test]
async fn a_peer_that_shuts_down_is_down_at_once_and_up_again_when_it_returns() {
    let ca = Ca::new("link ca");
    let (one, two) = pair_with(&ca, |_| {}, |_| {}, None);
    let (mut e1, _e2) = up(&one, &two).await;
    let two_addr = two.local_addr().unwrap();
    let start = Instant::now();
    two.shutdown().await;
    assert_eq!(
        next(&mut e1, Duration::from_millis(300)).await,
        LinkEvent::Down(2, DownReason::Closed("shutdown".into()))
    );
    assert!(start.elapsed() < Duration::from_millis(300));
    assert_eq!(one.send(2, Frame::Replicate(vec![])), Err(SendError::Down));
    assert!(one.take_unsynced(2));
    assert!(!one.take_unsynced(2));

    // Node 2 again, on the same address: node 1 redials (backoff at most 2 s).
    let mut c2 = config(2, &[(1, ANY.parse().unwrap())]);
    c2.listen = two_addr;
    // The old endpoint's driver lets go of the socket shortly after the close.
    let mut attempts = 0;
    let two = loop {
        match Link::start(c2.clone(), identity(&ca, &ca)) {
            Ok(link) => break link,
            Err(_) if attempts < 40 => {
                attempts += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("cannot restart node 2: {e}"),
        }
    };
    let mut e2 = two.events().unwrap();
    up_again(&mut e1, &mut e2, Duration::from_secs(5)).await;
}

/// Both sides report the other up again within `within`.
async fn up_again(
    e1: &mut mpsc::Receiver<LinkEvent>,
    e2: &mut mpsc::Receiver<LinkEvent>,
    within: Duration,
) {
    assert_eq!(next(e1, within).await, LinkEvent::Up(2));
    assert_eq!(next(e2, within).await, LinkEvent::Up(1));
}

/// A UDP relay between node 1 and node 2 that can stop forwarding: a network cut, or a peer
/// whose process stopped, as the other side sees it.
struct Relay {
    addr: SocketAddr,
    cut: Arc<AtomicBool>,
    tasks: [JoinHandle<()>; 2],
}

impl Relay {
    async fn start(to: SocketAddr) -> Relay {
        let front = Arc::new(UdpSocket::bind(ANY).await.unwrap());
        let back = Arc::new(UdpSocket::bind(ANY).await.unwrap());
        let cut = Arc::new(AtomicBool::new(false));
        let client = Arc::new(Mutex::new(None::<SocketAddr>));
        let forward = {
            let (front, back, cut, client) =
                (front.clone(), back.clone(), cut.clone(), client.clone());
            tokio::spawn(async move {
                let mut buf = vec![0u8; 65536];
                while let Ok((n, from)) = front.recv_from(&mut buf).await {
                    *client.lock().unwrap() = Some(from);
                    if !cut.load(Ordering::Relaxed) {
                        let _ = back.send_to(&buf[..n], to).await;
                    }
                }
            })
        };
        let backward = {
            let (front, cut) = (front.clone(), cut.clone());
            tokio::spawn(async move {
                let mut buf = vec![0u8; 65536];
                while let Ok((n, _)) = back.recv_from(&mut buf).await {
                    let client = *client.lock().unwrap();
                    if let (false, Some(client)) = (cut.load(Ordering::Relaxed), client) {
                        let _ = front.send_to(&buf[..n], client).await;
                    }
                }
            })
        };
        Relay {
            addr: front.local_addr().unwrap(),
            cut,
            tasks: [forward, backward],
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Cuts the relay once both sides are up; returns when each side saw its peer down (node 1's,
/// node 2's detection time).
async fn cut_and_time(
    relay: &Relay,
    e1: &mut mpsc::Receiver<LinkEvent>,
    e2: &mut mpsc::Receiver<LinkEvent>,
) -> (Duration, Duration) {
    let start = Instant::now();
    relay.cut.store(true, Ordering::Relaxed);
    let within = DEAD_AFTER + SLACK;
    let (d1, d2) = tokio::join!(
        async {
            let event = next(e1, within).await;
            (event, start.elapsed())
        },
        async {
            let event = next(e2, within).await;
            (event, start.elapsed())
        }
    );
    assert_eq!(d1.0, LinkEvent::Down(2, DownReason::TimedOut));
    assert_eq!(d2.0, LinkEvent::Down(1, DownReason::TimedOut));
    (d1.1, d2.1)
}

#[tokio::test]
async fn a_silent_peer_is_down_within_dead_after_and_up_again_when_heard() {
    let ca = Ca::new("link ca");
    let mut c2 = config(2, &[(1, ANY.parse().unwrap())]);
    c2.listen = ANY.parse().unwrap();
    let two = Link::start(c2, identity(&ca, &ca)).unwrap();
    let relay = Relay::start(two.local_addr().unwrap()).await;
    let one = Link::start(config(1, &[(2, relay.addr)]), identity(&ca, &ca)).unwrap();
    let (mut e1, mut e2) = up(&one, &two).await;

    let (t1, t2) = cut_and_time(&relay, &mut e1, &mut e2).await;
    assert!(
        t1 <= DEAD_AFTER + SLACK && t2 <= DEAD_AFTER + SLACK,
        "{t1:?} {t2:?}"
    );
    assert!(!one.is_up(2));

    relay.cut.store(false, Ordering::Relaxed);
    up_again(&mut e1, &mut e2, Duration::from_secs(6)).await;
    one.send(2, Frame::Replicate(vec![5])).unwrap();
    assert_eq!(
        next(&mut e2, Duration::from_secs(1)).await,
        LinkEvent::Frame(1, Frame::Replicate(vec![5]))
    );
}

/// Detection times over 10 cuts (run by hand: `cargo test -p pointsman --lib link -- --ignored
/// --nocapture`).
#[tokio::test]
#[ignore = "a measurement (10 cuts, ~15 s), not a check: run by hand with --nocapture"]
async fn silent_peer_detection_times() {
    let ca = Ca::new("link ca");
    let mut times = Vec::new();
    for _ in 0..10 {
        let two = Link::start(config(2, &[(1, ANY.parse().unwrap())]), identity(&ca, &ca)).unwrap();
        let relay = Relay::start(two.local_addr().unwrap()).await;
        let one = Link::start(config(1, &[(2, relay.addr)]), identity(&ca, &ca)).unwrap();
        let (mut e1, mut e2) = up(&one, &two).await;
        // Let keep-alives run for a while first.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let (t1, t2) = cut_and_time(&relay, &mut e1, &mut e2).await;
        times.push(t1);
        times.push(t2);
    }
    times.sort();
    println!(
        "silent peer detected after: min {:?} p50 {:?} max {:?} (n={})",
        times[0],
        times[times.len() / 2],
        times[times.len() - 1],
        times.len()
    );
}

#[tokio::test]
async fn a_full_queue_drops_and_counts_instead_of_waiting() {
    let (tx, _rx) = mpsc::channel(2);
    let address = PeerAddr {
        id: 2,
        address: ANY.parse().unwrap(),
        backup: None,
    };
    let peer = PeerState::new(&address, tx);
    assert_eq!(peer.offer(Frame::Replicate(vec![])), Err(SendError::Down));
    peer.set_up(true);
    assert!(peer.unsynced.swap(false, Ordering::AcqRel));
    assert_eq!(peer.offer(Frame::Replicate(vec![1])), Ok(()));
    assert_eq!(peer.offer(Frame::Replicate(vec![2])), Ok(()));
    // Nothing drains the queue: the third frame is dropped at once.
    assert_eq!(peer.offer(Frame::Replicate(vec![3])), Err(SendError::Full));
    assert_eq!(peer.dropped.load(Ordering::Relaxed), 2);
    assert!(peer.unsynced.load(Ordering::Acquire));
}

/// The link's series, on a recorder local to this (current-thread) test, which polls every
/// task of both links.
#[tokio::test]
async fn metrics_count_frames_deaths_and_say_up() {
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    let _guard = metrics::set_default_local_recorder(&recorder);
    let ca = Ca::new("link ca");
    let (one, two) = pair_with(&ca, |_| {}, |_| {}, None);
    let (mut e1, mut e2) = up(&one, &two).await;
    one.send(2, Frame::Replicate(vec![1])).unwrap();
    next(&mut e2, Duration::from_secs(1)).await;
    let text = handle.render();
    assert!(text.contains("pointsman_link_up{peer=\"2\"} 1"), "{text}");
    assert!(
        text.contains("pointsman_link_frames_total{peer=\"2\",direction=\"out\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("pointsman_link_frames_total{peer=\"1\",direction=\"in\"} 1"),
        "{text}"
    );
    two.shutdown().await;
    next(&mut e1, Duration::from_millis(300)).await;
    assert_eq!(one.send(2, Frame::Replicate(vec![])), Err(SendError::Down));
    let text = handle.render();
    assert!(text.contains("pointsman_link_up{peer=\"2\"} 0"), "{text}");
    assert!(
        text.contains("pointsman_link_deaths_total{peer=\"2\",reason=\"closed\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("pointsman_link_dropped_total{peer=\"2\"} 1"),
        "{text}"
    );
}

/// Node 2 behind two relays: node 1 dials it over the first, with the second as its backup
/// path. Node 2's entry for node 1 names two paths too (its own side of the grace).
async fn two_paths(ca: &Ca) -> (Link, Link, Relay, Relay) {
    let mut c2 = config(2, &[(1, ANY.parse().unwrap())]);
    c2.peers[0].backup = Some("127.0.0.1:9".parse().unwrap());
    let two = Link::start(c2, identity(ca, ca)).unwrap();
    let first = Relay::start(two.local_addr().unwrap()).await;
    let second = Relay::start(two.local_addr().unwrap()).await;
    let mut c1 = config(1, &[(2, first.addr)]);
    c1.peers[0].backup = Some(second.addr);
    let one = Link::start(c1, identity(ca, ca)).unwrap();
    (one, two, first, second)
}

#[tokio::test]
async fn a_cut_path_moves_the_link_to_the_other_path_and_the_peer_is_never_down() {
    let ca = Ca::new("link ca");
    let (one, two, first, second) = two_paths(&ca).await;
    let (mut e1, mut e2) = up(&one, &two).await;
    assert_eq!(one.path(2), Some(first.addr));
    // A frame over the first path: the connection that carried it will end, so node 1 cannot
    // know node 2 has everything.
    one.send(2, Frame::Replicate(vec![6])).unwrap();
    assert_eq!(
        next(&mut e2, Duration::from_secs(1)).await,
        LinkEvent::Frame(1, Frame::Replicate(vec![6]))
    );
    assert!(!one.is_unsynced(2));
    let cut = Instant::now();
    first.cut.store(true, Ordering::Relaxed);
    // Up again, over the second path, with no down in between: the consumer resyncs on it.
    let within = DEAD_AFTER + path_grace(DEAD_AFTER) + SLACK;
    up_again(&mut e1, &mut e2, within).await;
    let moved = cut.elapsed();
    assert!(moved <= within, "{moved:?}");
    assert_eq!(one.path(2), Some(second.addr));
    assert!(
        one.take_unsynced(2),
        "the connection that ended had carried frames"
    );
    one.send(2, Frame::Replicate(vec![7])).unwrap();
    assert_eq!(
        next(&mut e2, Duration::from_secs(1)).await,
        LinkEvent::Frame(1, Frame::Replicate(vec![7]))
    );
    two.send(1, Frame::Replicate(vec![8])).unwrap();
    assert_eq!(
        next(&mut e1, Duration::from_secs(1)).await,
        LinkEvent::Frame(2, Frame::Replicate(vec![8]))
    );
    // The first path answers again: the dialer moves back to it, still with no down.
    first.cut.store(false, Ordering::Relaxed);
    let within = FAILBACK + SLACK;
    up_again(&mut e1, &mut e2, within).await;
    assert_eq!(one.path(2), Some(first.addr));
}

#[tokio::test]
async fn a_peer_silent_on_both_paths_is_down_after_dead_after_and_the_grace() {
    let ca = Ca::new("link ca");
    let (one, two, first, second) = two_paths(&ca).await;
    let (mut e1, mut e2) = up(&one, &two).await;
    let cut = Instant::now();
    first.cut.store(true, Ordering::Relaxed);
    second.cut.store(true, Ordering::Relaxed);
    let within = DEAD_AFTER + path_grace(DEAD_AFTER) + SLACK;
    assert_eq!(
        next(&mut e1, within).await,
        LinkEvent::Down(2, DownReason::TimedOut)
    );
    assert_eq!(
        next(&mut e2, within).await,
        LinkEvent::Down(1, DownReason::TimedOut)
    );
    let down = cut.elapsed();
    // Silence is noticed from 4/5 of dead_after on (the idle timeout is dead_after less a
    // keep-alive interval), then the other path has its grace.
    assert!(
        down >= DEAD_AFTER * 4 / 5 + path_grace(DEAD_AFTER) && down <= within,
        "down after {down:?}: dead_after, then the grace for the other path"
    );
    // The first path returns: the dialer finds it again.
    first.cut.store(false, Ordering::Relaxed);
    up_again(&mut e1, &mut e2, Duration::from_secs(6)).await;
}
