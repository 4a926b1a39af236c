//! Unit tests of the TLS material: file checks with their key paths, mutual TLS, server name
//! checks, SNI, and reload (new handshakes see the new certificate, established sessions go on,
//! a bad file changes nothing). Certificates are generated here with rcgen.

use super::*;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use std::sync::atomic::{AtomicU32, Ordering};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// A test CA that issues server and client certificates.
pub(crate) struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pub(crate) pem: String,
}

impl Ca {
    pub(crate) fn new(name: &str) -> Ca {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name.push(DnType::CommonName, name);
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = p.self_signed(&key).unwrap();
        Ca {
            pem: cert.pem(),
            issuer: Issuer::new(p, key),
        }
    }

    /// (certificate PEM, key PEM) for `names` (DNS names or IPs).
    pub(crate) fn issue(&self, names: &[&str], client: bool) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
            .unwrap();
        p.distinguished_name.push(DnType::CommonName, names[0]);
        p.extended_key_usages = vec![if client {
            ExtendedKeyUsagePurpose::ClientAuth
        } else {
            ExtendedKeyUsagePurpose::ServerAuth
        }];
        let cert = p.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    /// (certificate PEM, key PEM) for a node of the node link at `ip`: server and client of
    /// its peers.
    pub(crate) fn node(&self, ip: &str) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(vec![ip.to_string()]).unwrap();
        p.distinguished_name.push(DnType::CommonName, "node");
        p.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let cert = p.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

/// A fresh directory for one test's files.
pub(crate) fn dir() -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    let d = std::env::temp_dir().join(format!(
        "pointsman-tls-unit-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// Listener files for a server certificate of `ca` (for 127.0.0.1 and localhost), with
/// `client_ca` if given.
fn listener(dir: &Path, ca: &Ca, client_ca: Option<&Ca>) -> ListenerFiles {
    let (cert, key) = ca.issue(&["localhost", "127.0.0.1"], false);
    ListenerFiles {
        cert: write(dir, "server.pem", &cert),
        key: write(dir, "server.key", &key),
        client_ca: client_ca.map(|c| write(dir, "client-ca.pem", &c.pem)),
    }
}

fn certificates(files: &ListenerFiles) -> Certificates {
    Certificates::load(&[("tls", Some(files))], &TlsConfig::default(), &[]).unwrap()
}

/// A client trusting `roots`, presenting `identity` if given.
fn client(roots: &[&Ca], identity: Option<(String, String)>) -> TlsConnector {
    let mut store = RootCertStore::empty();
    for ca in roots {
        for c in CertificateDer::pem_slice_iter(ca.pem.as_bytes()) {
            store.add(c.unwrap()).unwrap();
        }
    }
    let identity = identity.map(|(cert, key)| {
        (
            CertificateDer::pem_slice_iter(cert.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .unwrap(),
            PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap(),
        )
    });
    TlsConnector::from(client_config(Arc::new(store), identity, "test").unwrap())
}

/// Serves `certs`' listener 0 on a loopback port: each accepted connection's handshake result
/// goes to the channel; a good connection echoes what it reads.
async fn serve(
    certs: Arc<Certificates>,
) -> (
    SocketAddr,
    tokio::sync::mpsc::UnboundedReceiver<Result<(), String>>,
) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((stream, _)) = l.accept().await {
            let (certs, tx) = (certs.clone(), tx.clone());
            tokio::spawn(async move {
                match certs.accept(0, stream).await {
                    Ok(mut s) => {
                        let _ = tx.send(Ok(()));
                        let mut buf = [0u8; 64];
                        while let Ok(n) = s.read(&mut buf).await {
                            if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                            let _ = s.flush().await;
                        }
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e.to_string()));
                    }
                }
            });
        }
    });
    (addr, rx)
}

async fn connect(
    c: &TlsConnector,
    addr: SocketAddr,
    name: &str,
) -> std::io::Result<client::TlsStream<TcpStream>> {
    let stream = TcpStream::connect(addr).await?;
    c.connect(ServerName::try_from(name.to_string()).unwrap(), stream)
        .await
}

/// Writes `text` and reads the echo.
async fn echo(s: &mut client::TlsStream<TcpStream>, text: &[u8]) -> std::io::Result<Vec<u8>> {
    s.write_all(text).await?;
    s.flush().await?;
    let mut got = vec![0u8; text.len()];
    tokio::time::timeout(Duration::from_secs(2), s.read_exact(&mut got))
        .await
        .map_err(|_| std::io::Error::other("no echo"))??;
    Ok(got)
}

fn served_cert(s: &client::TlsStream<TcpStream>) -> Vec<u8> {
    s.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

fn pem_der(pem: &str) -> Vec<u8> {
    CertificateDer::from_pem_slice(pem.as_bytes())
        .unwrap()
        .to_vec()
}

#[test]
fn a_key_that_does_not_match_the_certificate_is_reported_at_the_key_path() {
    let d = dir();
    let ca = Ca::new("ca");
    let mut files = listener(&d, &ca, None);
    let (_, other_key) = ca.issue(&["localhost"], false);
    files.key = write(&d, "other.key", &other_key);
    let errors = check(&[None, Some(&files)], &TlsConfig::default());
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].key, "listen[1].key");
    assert!(
        errors[0].message.contains("does not match"),
        "{}",
        errors[0]
    );
}

#[test]
fn unreadable_and_non_pem_files_are_reported_at_their_keys() {
    let d = dir();
    let ca = Ca::new("ca");
    let mut files = listener(&d, &ca, None);
    files.cert = d.join("missing.pem");
    files.key = write(&d, "garbage.key", "not a key at all\n");
    files.client_ca = Some(write(&d, "empty.pem", ""));
    let errors = check(&[Some(&files)], &TlsConfig::default());
    let keys: Vec<&str> = errors.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(
        keys,
        ["listen[0].cert", "listen[0].key", "listen[0].client_ca"],
        "{errors:?}"
    );
    assert!(errors[0].message.contains("cannot read"), "{}", errors[0]);
    assert!(
        errors[1].message.contains("no private key"),
        "{}",
        errors[1]
    );
    assert!(
        errors[2].message.contains("no certificate"),
        "{}",
        errors[2]
    );
}

#[test]
fn a_tls_destination_without_any_ca_is_refused_and_a_node_wide_ca_serves_it() {
    let d = dir();
    let ca = Ca::new("ca");
    let dest = DestinationFiles {
        ca: None,
        client_cert: None,
        client_key: None,
        server_name: "sbc.example".into(),
    };
    let mut tls = TlsConfig {
        destinations: vec![None, Some(dest)],
        ..TlsConfig::default()
    };
    let errors = check(&[], &tls);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].key, "destination[1].ca");
    tls.ca = Some(write(&d, "ca.pem", &ca.pem));
    assert_eq!(check(&[], &tls), vec![]);
}

#[test]
fn a_destination_client_key_that_does_not_match_is_reported() {
    let d = dir();
    let ca = Ca::new("ca");
    let (cert, _) = ca.issue(&["pointsman"], true);
    let (_, key) = ca.issue(&["pointsman"], true);
    let tls = TlsConfig {
        destinations: vec![Some(DestinationFiles {
            ca: Some(write(&d, "ca.pem", &ca.pem)),
            client_cert: Some(write(&d, "c.pem", &cert)),
            client_key: Some(write(&d, "c.key", &key)),
            server_name: "127.0.0.1".into(),
        })],
        ..TlsConfig::default()
    };
    let errors = check(&[], &tls);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].key, "destination[0].client_key");
}

#[tokio::test]
async fn mutual_tls_refuses_a_client_of_another_ca_and_one_without_a_certificate() {
    let d = dir();
    let (ca, clients, rogue) = (Ca::new("server ca"), Ca::new("client ca"), Ca::new("rogue"));
    let certs = Arc::new(certificates(&listener(&d, &ca, Some(&clients))));
    let (addr, mut results) = serve(certs).await;

    // From the right CA: accepted, and the connection carries data.
    let good = client(&[&ca], Some(clients.issue(&["carrier"], true)));
    let mut s = connect(&good, addr, "127.0.0.1").await.unwrap();
    assert_eq!(results.recv().await.unwrap(), Ok(()));
    assert_eq!(echo(&mut s, b"OPTIONS").await.unwrap(), b"OPTIONS");

    // From another CA: the server refuses it (under TLS 1.3 the client learns on its first
    // read), and nothing it sends is read.
    let bad = client(&[&ca], Some(rogue.issue(&["carrier"], true)));
    if let Ok(mut s) = connect(&bad, addr, "127.0.0.1").await {
        assert!(echo(&mut s, b"OPTIONS").await.is_err());
    }
    let refused = results.recv().await.unwrap().unwrap_err();
    assert!(refused.contains("certificate"), "{refused}");

    // No certificate at all: refused too.
    let anonymous = client(&[&ca], None);
    if let Ok(mut s) = connect(&anonymous, addr, "127.0.0.1").await {
        assert!(echo(&mut s, b"OPTIONS").await.is_err());
    }
    assert!(results.recv().await.unwrap().is_err());
}

#[tokio::test]
async fn any_sni_gets_the_listener_certificate() {
    let d = dir();
    let ca = Ca::new("ca");
    let certs = Arc::new(certificates(&listener(&d, &ca, None)));
    let (addr, _results) = serve(certs).await;
    let c = client(&[&ca], None);
    // "localhost" is sent as SNI; an IP address is not sent at all.
    for name in ["localhost", "127.0.0.1"] {
        let mut s = connect(&c, addr, name).await.unwrap();
        assert_eq!(echo(&mut s, b"x").await.unwrap(), b"x", "{name}");
    }
}

#[tokio::test]
async fn a_destination_whose_certificate_lacks_its_server_name_fails_the_handshake() {
    let d = dir();
    let ca = Ca::new("ca");
    let server = Arc::new(certificates(&listener(&d, &ca, None)));
    let (addr, _results) = serve(server).await;
    let dest = |name: &str| TlsConfig {
        destinations: vec![Some(DestinationFiles {
            ca: Some(write(&d, "dest-ca.pem", &ca.pem)),
            client_cert: None,
            client_key: None,
            server_name: name.into(),
        })],
        ..TlsConfig::default()
    };
    let right = Certificates::load(&[], &dest("localhost"), &[(0, addr)]).unwrap();
    let s = TcpStream::connect(addr).await.unwrap();
    assert!(right.connect(addr, s).await.is_ok());
    let wrong = Certificates::load(&[], &dest("sbc.example.net"), &[(0, addr)]).unwrap();
    let s = TcpStream::connect(addr).await.unwrap();
    let e = wrong.connect(addr, s).await.unwrap_err();
    assert!(e.to_string().contains("certificate"), "{e}");
    // An address that is no destination, with no [tls] ca: nothing to verify it with.
    let s = TcpStream::connect(addr).await.unwrap();
    let other = SocketAddr::new(addr.ip(), addr.port().wrapping_add(1));
    assert!(right.connect(other, s).await.is_err());
}

#[tokio::test]
async fn reload_serves_the_new_certificate_to_new_handshakes_and_keeps_established_ones() {
    let d = dir();
    let (old_ca, new_ca) = (Ca::new("old ca"), Ca::new("new ca"));
    let files = listener(&d, &old_ca, None);
    let old_pem = std::fs::read_to_string(&files.cert).unwrap();
    let certs = Arc::new(certificates(&files));
    let (addr, _results) = serve(certs.clone()).await;
    let c = client(&[&old_ca, &new_ca], None);
    let mut before = connect(&c, addr, "localhost").await.unwrap();
    assert_eq!(served_cert(&before), pem_der(&old_pem));

    // The same paths, new contents, from another CA.
    let (cert, key) = new_ca.issue(&["localhost", "127.0.0.1"], false);
    std::fs::write(&files.cert, &cert).unwrap();
    std::fs::write(&files.key, &key).unwrap();
    certs
        .reload(&[("tls", Some(&files))], &TlsConfig::default(), &[])
        .unwrap();

    let mut after = connect(&c, addr, "localhost").await.unwrap();
    assert_eq!(served_cert(&after), pem_der(&cert));
    assert_eq!(echo(&mut after, b"new").await.unwrap(), b"new");
    assert_eq!(echo(&mut before, b"old").await.unwrap(), b"old");

    // A client that trusts only the old CA is refused from now on.
    let old_only = client(&[&old_ca], None);
    assert!(connect(&old_only, addr, "localhost").await.is_err());
}

#[tokio::test]
async fn a_bad_file_on_reload_keeps_the_running_certificate() {
    let d = dir();
    let ca = Ca::new("ca");
    let files = listener(&d, &ca, None);
    let pem = std::fs::read_to_string(&files.cert).unwrap();
    let certs = Arc::new(certificates(&files));
    let (addr, _results) = serve(certs.clone()).await;

    let (_, wrong_key) = ca.issue(&["localhost"], false);
    std::fs::write(&files.key, wrong_key).unwrap();
    let errors = certs
        .reload(&[("tls", Some(&files))], &TlsConfig::default(), &[])
        .unwrap_err();
    assert_eq!(errors[0].key, "listen[0].key", "{errors:?}");

    let c = client(&[&ca], None);
    let s = connect(&c, addr, "localhost").await.unwrap();
    assert_eq!(served_cert(&s), pem_der(&pem));
}

#[tokio::test]
async fn a_handshake_that_never_comes_times_out() {
    let d = dir();
    let ca = Ca::new("ca");
    let files = listener(&d, &ca, None);
    let certs = Certificates::load(
        &[("tls", Some(&files))],
        &TlsConfig {
            handshake_timeout: Duration::from_millis(100),
            ..TlsConfig::default()
        },
        &[],
    )
    .unwrap();
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    // A client that connects and says nothing.
    let _silent = TcpStream::connect(addr).await.unwrap();
    let (stream, _) = l.accept().await.unwrap();
    let e = certs.accept(0, stream).await.unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::TimedOut);
}

mod over_tcp {
    //! The TCP transport with TLS: framing, reuse and failure reports over TLS.
    use super::*;
    use crate::transport::tcp::{Event, Tcp, TcpSettings};
    use crate::transport::{Peer, Proto};
    use bytes::Bytes;

    const OPTIONS: &[u8] = b"OPTIONS sip:x SIP/2.0\r\nVia: SIP/2.0/TLS h;branch=z9hG4bK1\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:c@d>\r\nCall-ID: 1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n";

    fn tcp(
        certs: Certificates,
    ) -> (
        Arc<Tcp>,
        crate::transport::tcp::Inbox,
        crate::transport::tcp::EventSink,
    ) {
        let (tx, rx) = crate::transport::tcp::inbox();
        let settings = TcpSettings {
            idle_timeout: Duration::from_secs(5),
            max_connections: 8,
            connect_timeout: Duration::from_secs(1),
            limits: pointsman_protocol::wire::Limits::default(),
        };
        let t = Tcp::with_tls(
            settings,
            vec![tx.clone()],
            vec![tokio::runtime::Handle::current()],
            Some(Arc::new(certs)),
        );
        (t, rx, tx)
    }

    #[tokio::test]
    async fn a_tls_listener_frames_messages_and_replies_reuse_the_connection() {
        let d = dir();
        let ca = Ca::new("ca");
        let (t, mut rx, sink) = tcp(certificates(&listener(&d, &ca, None)));
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(t.clone().accept_loop(l, 0));

        let c = client(&[&ca], None);
        let mut s = connect(&c, addr, "localhost").await.unwrap();
        s.write_all(OPTIONS).await.unwrap();
        s.flush().await.unwrap();
        let Some(Event::Message { bytes, from, .. }) = rx.recv().await else {
            panic!("no message")
        };
        assert_eq!(&bytes[..], OPTIONS);
        assert_eq!(from.proto, Proto::Tls);
        t.send(from, Bytes::from_static(b"reply"), None, &sink);
        let mut got = [0u8; 5];
        s.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"reply");
        assert_eq!(t.open_connections(), 1);
    }

    #[tokio::test]
    async fn a_failed_handshake_towards_a_peer_reports_the_queued_messages_undelivered() {
        let d = dir();
        let (ca, other) = (Ca::new("ca"), Ca::new("other"));
        // The peer's certificate comes from `other`; pointsman trusts only `ca`.
        let peer = Arc::new(certificates(&listener(&d, &other, None)));
        let (addr, _results) = serve(peer).await;
        let trust = TlsConfig {
            destinations: vec![Some(DestinationFiles {
                ca: Some(write(&d, "trust.pem", &ca.pem)),
                client_cert: None,
                client_key: None,
                server_name: "localhost".into(),
            })],
            ..TlsConfig::default()
        };
        let (t, mut rx, sink) = tcp(Certificates::load(&[], &trust, &[(0, addr)]).unwrap());
        let to = Peer {
            proto: Proto::Tls,
            addr,
            conn: None,
        };
        t.send(to, Bytes::from_static(OPTIONS), Some(7), &sink);
        match tokio::time::timeout(Duration::from_secs(3), rx.recv()).await {
            Ok(Some(Event::Undelivered(7))) => {}
            other => panic!("expected Undelivered(7), got {other:?}"),
        }
        assert_eq!(t.open_connections(), 0);
    }

    #[tokio::test]
    async fn tls_and_tcp_to_one_address_never_share_a_connection() {
        let d = dir();
        let ca = Ca::new("ca");
        let trust = TlsConfig {
            ca: Some(write(&d, "ca.pem", &ca.pem)),
            ..TlsConfig::default()
        };
        let (t, rx, sink) = tcp(Certificates::load(&[], &trust, &[]).unwrap());
        // A plain TCP peer: the TLS send opens a connection of its own, whose handshake fails.
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = l.accept().await {
                held.push(s);
            }
        });
        let plain = Peer {
            proto: Proto::Tcp,
            addr,
            conn: None,
        };
        t.send(plain, Bytes::from_static(OPTIONS), Some(1), &sink);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(t.open_connections(), 1);
        let secure = Peer {
            proto: Proto::Tls,
            ..plain
        };
        t.send(secure, Bytes::from_static(OPTIONS), Some(2), &sink);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(
            t.open_connections(),
            2,
            "TLS did not reuse the TCP connection"
        );
        drop(rx);
    }
}
