//! End-to-end TLS: a pointsman process with TLS listeners and TLS destinations, between a
//! simulated carrier and clouds that speak TLS (`pointsman_sim` over tokio-rustls), with
//! certificates generated for each test by rcgen: mutual TLS refuses a client of another CA and
//! serves one of its own, a call crosses carrier→pointsman→cloud over TLS (mutual TLS on both
//! legs), a failed handshake towards a destination fails the branch over at once, and a reload
//! swaps the certificate for new handshakes while an established connection goes on.

mod support;

use pointsman_sim::{Behaviour, Carrier, Cloud, Endpoint, Journal, Summary, TlsClient};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use support::certs::{Ca, Identity};
use support::{at, fresh_ip, Node, PROXY_PORT};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

const WAIT: Duration = Duration::from_secs(5);
const TLS_PORT: u16 = 5061;
const CLOUD_PORT: u16 = 5071;
const BACKUP_PORT: u16 = 5081;

// ---- certificates ------------------------------------------------------------------------

/// A directory for one test's PEM files.
struct Files(PathBuf);

impl Files {
    fn new(ip: IpAddr) -> Files {
        let d = std::env::temp_dir().join(format!("pointsman-tls-{}-{ip}", std::process::id()));
        std::fs::create_dir_all(&d).expect("temp dir");
        Files(d)
    }

    fn write(&self, name: &str, text: &str) -> String {
        let p = self.0.join(name);
        std::fs::write(&p, text).expect("write PEM");
        p.display().to_string()
    }
}

impl Drop for Files {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn certs(pem: &str) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<_, _>>()
        .expect("PEM certificates")
}

fn key(pem: &str) -> PrivateKeyDer<'static> {
    PrivateKeyDer::from_pem_slice(pem.as_bytes()).expect("PEM key")
}

fn roots(cas: &[&Ca]) -> Arc<RootCertStore> {
    let mut store = RootCertStore::empty();
    for ca in cas {
        for c in certs(&ca.pem) {
            store.add(c).expect("root");
        }
    }
    Arc::new(store)
}

/// A client trusting `cas`, presenting `identity` if given.
fn client_config(cas: &[&Ca], identity: Option<&Identity>) -> Arc<ClientConfig> {
    pointsman::transport::tls::install_provider();
    let builder = ClientConfig::builder().with_root_certificates(roots(cas));
    Arc::new(match identity {
        Some(id) => builder
            .with_client_auth_cert(certs(&id.cert), key(&id.key))
            .expect("client identity"),
        None => builder.with_no_client_auth(),
    })
}

/// A server presenting `identity`, requiring a client certificate of `client_ca` if given.
fn server_config(identity: &Identity, client_ca: Option<&Ca>) -> Arc<ServerConfig> {
    pointsman::transport::tls::install_provider();
    let builder = ServerConfig::builder();
    let builder = match client_ca {
        Some(ca) => builder.with_client_cert_verifier(
            rustls::server::WebPkiClientVerifier::builder(roots(&[ca]))
                .build()
                .expect("client verifier"),
        ),
        None => builder.with_no_client_auth(),
    };
    Arc::new(
        builder
            .with_single_cert(certs(&identity.cert), key(&identity.key))
            .expect("server identity"),
    )
}

fn ip_name(ip: IpAddr) -> ServerName<'static> {
    ServerName::IpAddress(ip.into())
}

// ---- a raw TLS client ----------------------------------------------------------------------

async fn tls_connect(
    config: Arc<ClientConfig>,
    to: SocketAddr,
) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(to).await?;
    TlsConnector::from(config)
        .connect(ip_name(to.ip()), tcp)
        .await
}

/// Sends an OPTIONS to pointsman on `s` and returns the status line of the answer (an error if
/// the connection fails or closes first).
async fn options(s: &mut TlsStream<TcpStream>, n: u32) -> std::io::Result<String> {
    let me = s.get_ref().0.local_addr()?;
    let to = s.get_ref().0.peer_addr()?;
    let req = format!(
        "OPTIONS sip:{to};transport=tls SIP/2.0\r\nVia: SIP/2.0/TLS {me};branch=z9hG4bK-tls{n}\r\n\
         Max-Forwards: 70\r\nFrom: <sip:test@{me}>;tag=t{n}\r\nTo: <sip:{to}>\r\n\
         Call-ID: tls-options-{n}@{me}\r\nCSeq: {n} OPTIONS\r\nContent-Length: 0\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await?;
    s.flush().await?;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let read = async {
        loop {
            let n = s.read(&mut buf).await?;
            if n == 0 {
                return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof));
            }
            got.extend_from_slice(&buf[..n]);
            if got.windows(4).any(|w| w == b"\r\n\r\n") {
                let text = String::from_utf8_lossy(&got).into_owned();
                return Ok(text.lines().next().unwrap_or_default().to_string());
            }
        }
    };
    tokio::time::timeout(WAIT, read)
        .await
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))?
}

fn served_cert(s: &TlsStream<TcpStream>) -> Vec<u8> {
    s.get_ref()
        .1
        .peer_certificates()
        .expect("server certificate")[0]
        .to_vec()
}

fn der(pem: &str) -> Vec<u8> {
    certs(pem)[0].to_vec()
}

// ---- pointsman -----------------------------------------------------------------------------

/// A UDP listener (readiness, UDP carriers) and a TLS listener with `tls_keys`, then
/// `rest` (destinations and the route).
fn config(ip: IpAddr, tls_keys: &str, rest: &str) -> String {
    format!(
        r#"
[node]
id = 7
workers = 2

[[listen]]
transport = "udp"
address = "{ip}:{PROXY_PORT}"

[[listen]]
name = "carrier-tls"
transport = "tls"
address = "{ip}:{TLS_PORT}"
{tls_keys}

[timers]
t1 = "100ms"

[admin]
listen = "{ip}:9060"

{rest}
"#
    )
}

fn listener_keys(files: &Files, server: &Identity, client_ca: Option<&Ca>) -> String {
    let mut keys = format!(
        "cert = \"{}\"\nkey = \"{}\"\n",
        files.write("edge.pem", &server.cert),
        files.write("edge.key", &server.key)
    );
    if let Some(ca) = client_ca {
        keys.push_str(&format!(
            "client_ca = \"{}\"\n",
            files.write("carrier-ca.pem", &ca.pem)
        ));
    }
    keys
}

/// One UDP destination nobody answers (the TLS listener tests need a route, not a call).
fn quiet_route(ip: IpAddr) -> String {
    format!(
        "[[destination]]\nname = \"cloud\"\naddress = \"{ip}:{CLOUD_PORT}\"\nprobe = false\n\n\
         [[route]]\nname = \"default\"\ndestinations = [\"cloud\"]\n"
    )
}

async fn expect(
    journal: &Journal,
    node: &Node,
    peer: &str,
    what: &str,
    pred: impl Fn(&Summary) -> bool,
) -> pointsman_sim::Entry {
    match journal.wait_for(peer, WAIT, pred).await {
        Some(e) => e,
        None => panic!(
            "{peer} never received {what}\n--- journal ---\n{}--- pointsman log ---\n{}",
            journal.dump(),
            node.log()
        ),
    }
}

// ---- tests ---------------------------------------------------------------------------------

#[tokio::test]
async fn mutual_tls_listener_refuses_a_client_of_another_ca_and_serves_one_of_its_own() {
    let ip = fresh_ip();
    let files = Files::new(ip);
    let (edge_ca, carrier_ca, rogue_ca) = (Ca::new("edge"), Ca::new("carrier"), Ca::new("rogue"));
    let keys = listener_keys(&files, &edge_ca.server(ip), Some(&carrier_ca));
    let node = Node::start(&config(ip, &keys, &quiet_route(ip)), at(ip, PROXY_PORT)).await;
    let proxy = at(ip, TLS_PORT);

    // A carrier certificate from the CA the listener trusts: served.
    let good = client_config(&[&edge_ca], Some(&carrier_ca.client("carrier")));
    let mut s = tls_connect(good, proxy).await.expect("handshake");
    assert_eq!(
        s.get_ref().1.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_3)
    );
    assert_eq!(options(&mut s, 1).await.unwrap(), "SIP/2.0 200 OK");

    // A certificate from another CA: the handshake fails (under TLS 1.3 the client learns it
    // on its first read) and nothing it sent is answered.
    for (what, identity) in [
        ("another CA", Some(rogue_ca.client("carrier"))),
        ("no certificate", None),
    ] {
        let bad = client_config(&[&edge_ca], identity.as_ref());
        match tls_connect(bad, proxy).await {
            Err(_) => {}
            Ok(mut s) => {
                let answer = options(&mut s, 2).await;
                assert!(answer.is_err(), "{what}: answered {answer:?}");
            }
        }
    }
    // The refusals did not disturb the connection that was let in.
    assert_eq!(options(&mut s, 3).await.unwrap(), "SIP/2.0 200 OK");
    assert!(
        node.log().contains("TLS handshake with a client failed"),
        "{}",
        node.log()
    );
}

#[tokio::test]
async fn tls_1_2_clients_are_served() {
    let ip = fresh_ip();
    let files = Files::new(ip);
    let edge_ca = Ca::new("edge");
    let keys = listener_keys(&files, &edge_ca.server(ip), None);
    let _node = Node::start(&config(ip, &keys, &quiet_route(ip)), at(ip, PROXY_PORT)).await;
    pointsman::transport::tls::install_provider();
    let tls12 = Arc::new(
        ClientConfig::builder_with_protocol_versions(&[&rustls::version::TLS12])
            .with_root_certificates(roots(&[&edge_ca]))
            .with_no_client_auth(),
    );
    let mut s = tls_connect(tls12, at(ip, TLS_PORT))
        .await
        .expect("handshake");
    assert_eq!(
        s.get_ref().1.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_2)
    );
    assert_eq!(options(&mut s, 1).await.unwrap(), "SIP/2.0 200 OK");
}

#[tokio::test]
async fn call_over_tls_from_carrier_to_cloud_is_answered_and_hung_up() {
    let ip = fresh_ip();
    let files = Files::new(ip);
    let journal = Arc::new(Journal::default());
    // Carrier leg: pointsman's certificate from `edge`, the carrier's from `carrier`.
    // Cloud leg: the cloud's from `cloud`, pointsman's client certificate from `pointsman`.
    let (edge_ca, carrier_ca) = (Ca::new("edge"), Ca::new("carrier"));
    let (cloud_ca, pointsman_ca) = (Ca::new("cloud"), Ca::new("pointsman"));
    let cloud_ep = Endpoint::tls_listen(
        at(ip, CLOUD_PORT),
        server_config(&cloud_ca.server(ip), Some(&pointsman_ca)),
        None,
    )
    .await
    .expect("bind cloud");
    let _cloud = Cloud::start("cloud", cloud_ep, Behaviour::answer(), journal.clone());
    let me = pointsman_ca.client("pointsman");
    let rest = format!(
        "[[destination]]\nname = \"cloud\"\naddress = \"{ip}:{CLOUD_PORT}\"\ntransport = \"tls\"\n\
         ca = \"{ca}\"\nclient_cert = \"{cert}\"\nclient_key = \"{key}\"\n\n\
         [[route]]\nname = \"default\"\ndestinations = [\"cloud\"]\n",
        ca = files.write("cloud-ca.pem", &cloud_ca.pem),
        cert = files.write("me.pem", &me.cert),
        key = files.write("me.key", &me.key),
    );
    let keys = listener_keys(&files, &edge_ca.server(ip), Some(&carrier_ca));
    let node = Node::start(&config(ip, &keys, &rest), at(ip, PROXY_PORT)).await;

    // Health probes reach the cloud over TLS too.
    let probe = expect(&journal, &node, "cloud", "an OPTIONS probe", |s| {
        s.is("OPTIONS")
    })
    .await;
    let via = probe.header("Via").unwrap_or_default();
    assert!(via.starts_with("SIP/2.0/TLS"), "{via}");

    let carrier = Carrier::tls(
        "carrier",
        at(ip, TLS_PORT),
        TlsClient {
            config: client_config(&[&edge_ca], Some(&carrier_ca.client("carrier"))),
            server_name: ip_name(ip),
        },
        journal.clone(),
    )
    .await
    .expect("carrier handshake");
    carrier
        .invite(&carrier.invite_spec("tls-call"))
        .await
        .unwrap();

    let invite = expect(&journal, &node, "cloud", "the INVITE", |s| s.is("INVITE")).await;
    let via = invite.header("Via").unwrap_or_default();
    assert!(
        via.starts_with(&format!("SIP/2.0/TLS {ip}:{TLS_PORT};")),
        "pointsman's Via names TLS and the TLS port: {via}"
    );
    let ok = expect(&journal, &node, "carrier", "200 to the INVITE", |s| {
        s.is_response(200, "INVITE")
    })
    .await;
    let rr = ok.header("Record-Route").unwrap_or_default();
    assert!(
        rr.contains(&format!("<sip:{ip}:{TLS_PORT};transport=tls;lr;")),
        "Record-Route sends the carrier's in-dialog requests back over TLS: {rr}"
    );
    expect(&journal, &node, "cloud", "the ACK", |s| s.is("ACK")).await;
    carrier.hang_up("tls-call").await.unwrap();
    expect(&journal, &node, "cloud", "the BYE", |s| s.is("BYE")).await;
    expect(&journal, &node, "carrier", "200 to the BYE", |s| {
        s.is_response(200, "BYE")
    })
    .await;
}

#[tokio::test]
async fn a_destination_whose_certificate_fails_verification_fails_over_at_once() {
    let ip = fresh_ip();
    let files = Files::new(ip);
    let journal = Arc::new(Journal::default());
    let (trusted, impostor) = (Ca::new("trusted"), Ca::new("impostor"));
    // The primary's certificate comes from a CA pointsman does not trust for it.
    let primary_ep = Endpoint::tls_listen(
        at(ip, CLOUD_PORT),
        server_config(&impostor.server(ip), None),
        None,
    )
    .await
    .expect("bind primary");
    let _primary = Cloud::start("primary", primary_ep, Behaviour::answer(), journal.clone());
    let _backup = Cloud::udp(
        "backup",
        at(ip, BACKUP_PORT),
        Behaviour::answer(),
        journal.clone(),
    )
    .expect("bind backup");
    // A provisional timer far longer than the wait: only the handshake failure can fail over.
    let rest = format!(
        "[[destination]]\nname = \"primary\"\naddress = \"{ip}:{CLOUD_PORT}\"\ntransport = \"tls\"\n\
         ca = \"{ca}\"\nprovisional_timeout = \"60s\"\nprobe = false\n\n\
         [[destination]]\nname = \"backup\"\naddress = \"{ip}:{BACKUP_PORT}\"\nprobe = false\n\n\
         [[route]]\nname = \"default\"\ndestinations = [\"primary\", \"backup\"]\n",
        ca = files.write("trusted.pem", &trusted.pem),
    );
    let keys = listener_keys(&files, &trusted.server(ip), None);
    let node = Node::start(&config(ip, &keys, &rest), at(ip, PROXY_PORT)).await;
    let carrier = Carrier::udp("carrier", at(ip, 5090), at(ip, PROXY_PORT), journal.clone())
        .expect("bind carrier");
    carrier
        .invite(&carrier.invite_spec("tls-failover"))
        .await
        .unwrap();
    expect(&journal, &node, "backup", "the INVITE", |s| s.is("INVITE")).await;
    expect(&journal, &node, "carrier", "200 to the INVITE", |s| {
        s.is_response(200, "INVITE")
    })
    .await;
    assert_eq!(
        journal.count("primary", |s| s.is("INVITE")),
        0,
        "nothing crossed the failed handshake"
    );
    assert!(
        node.log().contains("TLS handshake with a peer failed"),
        "{}",
        node.log()
    );
}

#[tokio::test]
async fn reload_serves_a_new_certificate_to_new_handshakes_and_keeps_established_connections() {
    let ip = fresh_ip();
    let files = Files::new(ip);
    let (old_ca, new_ca) = (Ca::new("old"), Ca::new("new"));
    let old = old_ca.server(ip);
    let keys = listener_keys(&files, &old, None);
    let text = config(ip, &keys, &quiet_route(ip));
    let node = Node::start(&text, at(ip, PROXY_PORT)).await;
    let proxy = at(ip, TLS_PORT);
    let trusts_both = client_config(&[&old_ca, &new_ca], None);

    let mut before = tls_connect(trusts_both.clone(), proxy).await.unwrap();
    assert_eq!(served_cert(&before), der(&old.cert));
    assert_eq!(options(&mut before, 1).await.unwrap(), "SIP/2.0 200 OK");

    // New files at the same paths, from another CA; SIGHUP.
    let new = new_ca.server(ip);
    files.write("edge.pem", &new.cert);
    files.write("edge.key", &new.key);
    assert!(node.reload(&text).await, "reload refused:\n{}", node.log());

    let mut after = tls_connect(trusts_both.clone(), proxy).await.unwrap();
    assert_eq!(served_cert(&after), der(&new.cert));
    assert_eq!(options(&mut after, 2).await.unwrap(), "SIP/2.0 200 OK");
    // The connection made before the reload is still served.
    assert_eq!(options(&mut before, 3).await.unwrap(), "SIP/2.0 200 OK");
    // A client that trusts only the old CA no longer gets in.
    assert!(tls_connect(client_config(&[&old_ca], None), proxy)
        .await
        .is_err());

    // A key that does not match: the reload is refused and the running certificate stays.
    files.write("edge.key", &new_ca.server(ip).key);
    assert!(!node.reload(&text).await, "a bad key was accepted");
    assert!(
        node.log().contains("listen[1].key"),
        "the refusal names the key: {}",
        node.log()
    );
    let mut still = tls_connect(trusts_both, proxy).await.unwrap();
    assert_eq!(served_cert(&still), der(&new.cert));
    assert_eq!(options(&mut still, 4).await.unwrap(), "SIP/2.0 200 OK");
    assert_eq!(options(&mut before, 5).await.unwrap(), "SIP/2.0 200 OK");
}
