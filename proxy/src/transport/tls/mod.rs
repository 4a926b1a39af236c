//! TLS: the certificates, keys and trust anchors of TLS listeners and TLS destinations, the
//! rustls configurations built from them, and the handshakes that turn an accepted or connected
//! TCP stream into a TLS stream for the `tcp` module (which frames, reuses, times out and caps TLS
//! connections exactly as TCP ones).
//!
//! - **One crypto provider** (ring) is compiled in and installed as the process default by
//!   [`install_provider`]; TLS 1.3 and 1.2 only.
//! - **Listeners** serve one certificate chain each, whatever SNI the client sends (or none).
//!   With `client_ca`, a client certificate is required and verified against that bundle
//!   (mutual TLS); a client without one, or with one from another CA, fails the handshake.
//! - **Destinations** are verified against their `ca` (or the node-wide `[tls] ca`), and their
//!   certificate must carry `server_name` (default: the host of their address). With
//!   `client_cert`/`client_key`, pointsman presents that identity (mutual TLS). A TLS peer that
//!   is not a destination (an in-dialog request towards a `transport=tls` or `sips:` URI) is
//!   verified against `[tls] ca` and must carry the IP address it is reached at; without
//!   `[tls] ca` pointsman cannot reach such a peer and reports the request undelivered.
//! - **Reload** ([`Certificates::reload`]): every file is read again and every configuration
//!   rebuilt; only if all of them are good are they swapped in, atomically, for the next
//!   handshakes. Established connections keep the session they negotiated.
//!
//! It must not read SIP, or decide anything but whether a peer is who it says it is.

use arc_swap::ArcSwap;
use rustls::client::ClientConfig;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert, ServerConfig, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, SupportedProtocolVersion};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_rustls::{client, server, TlsAcceptor, TlsConnector};

/// Default `[tls] handshake_timeout`.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// The protocol versions pointsman speaks: TLS 1.3 and 1.2, nothing older.
pub static VERSIONS: &[&SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];

/// Installs ring as the process-wide rustls provider. Called at start (and by everything here
/// that builds a configuration); a provider already installed is kept.
pub fn install_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

fn provider() -> Arc<CryptoProvider> {
    install_provider();
    CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(rustls::crypto::ring::default_provider()))
}

/// A TLS listener's files (`[[listen]] transport = "tls"`), paths resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListenerFiles {
    /// `cert`: PEM certificate chain, end-entity first.
    pub cert: PathBuf,
    /// `key`: PEM private key (PKCS#8, PKCS#1 or SEC1) of the end-entity certificate.
    pub key: PathBuf,
    /// `client_ca`: PEM bundle; when set, clients must present a certificate it verifies.
    pub client_ca: Option<PathBuf>,
}

/// A TLS destination's files and expected name, paths resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DestinationFiles {
    /// `ca` (`None`: `[tls] ca`).
    pub ca: Option<PathBuf>,
    /// `client_cert` and `client_key` (mutual TLS towards the destination).
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    /// `server_name`: checked against the destination's certificate, sent as SNI.
    pub server_name: String,
}

/// `[tls]` and the destinations' TLS files, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsConfig {
    /// `handshake_timeout`: a handshake (inbound or outbound) not done by then fails.
    pub handshake_timeout: Duration,
    /// `ca`: trust for TLS destinations without a `ca` of their own and for TLS peers that
    /// are not destinations.
    pub ca: Option<PathBuf>,
    /// By destination index (`router.rules.destinations`): `Some` for TLS destinations.
    pub destinations: Vec<Option<DestinationFiles>>,
}

impl Default for TlsConfig {
    fn default() -> Self {
        TlsConfig {
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            ca: None,
            destinations: Vec::new(),
        }
    }
}

/// What is wrong with one TLS setting: its key path (`listen[2].key`, `destination[0].ca`,
/// `tls.ca`) and what to do.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct TlsError {
    pub key: String,
    pub message: String,
}

fn err(key: &str, message: String) -> TlsError {
    TlsError {
        key: key.to_string(),
        message,
    }
}

fn read(path: &Path, key: &str) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|e| {
        err(
            key,
            format!(
                "cannot read {}: {e}; give the path of a readable PEM file",
                path.display()
            ),
        )
    })
}

/// Every certificate of a PEM file (at least one).
pub fn load_certs(path: &Path, key: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(path, key)?;
    let certs: Vec<_> = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<_, _>>()
        .map_err(|e| {
            err(
                key,
                format!("{} is not a valid PEM file: {e}", path.display()),
            )
        })?;
    if certs.is_empty() {
        return Err(err(
            key,
            format!(
                "{} holds no certificate: expected PEM blocks \"-----BEGIN CERTIFICATE-----\"",
                path.display()
            ),
        ));
    }
    Ok(certs)
}

/// The first private key of a PEM file.
pub fn load_key(path: &Path, key: &str) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read(path, key)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| match e {
        rustls_pki_types::pem::Error::NoItemsFound => err(
            key,
            format!(
                "{} holds no private key: expected a PEM block \"-----BEGIN PRIVATE KEY-----\" \
                 (PKCS#8), \"RSA PRIVATE KEY\" (PKCS#1) or \"EC PRIVATE KEY\" (SEC1)",
                path.display()
            ),
        ),
        e => err(
            key,
            format!("{} is not a valid PEM file: {e}", path.display()),
        ),
    })
}

/// A trust store of every certificate in a PEM bundle.
pub fn load_roots(path: &Path, key: &str) -> Result<Arc<RootCertStore>, TlsError> {
    let mut roots = RootCertStore::empty();
    for (n, cert) in load_certs(path, key)?.into_iter().enumerate() {
        roots.add(cert).map_err(|e| {
            err(
                key,
                format!(
                    "certificate {} of {} is not a usable CA certificate: {e}",
                    n + 1,
                    path.display()
                ),
            )
        })?;
    }
    Ok(Arc::new(roots))
}

/// A certificate chain and its key, checked to belong together.
fn certified_key(
    cert_path: &Path,
    cert_key: &str,
    key_path: &Path,
    key_key: &str,
) -> Result<
    (
        Vec<CertificateDer<'static>>,
        PrivateKeyDer<'static>,
        Arc<CertifiedKey>,
    ),
    Vec<TlsError>,
> {
    let certs = load_certs(cert_path, cert_key);
    let key = load_key(key_path, key_key);
    let (certs, key) = match (certs, key) {
        (Ok(c), Ok(k)) => (c, k),
        (c, k) => return Err(c.err().into_iter().chain(k.err()).collect()),
    };
    let signing = provider()
        .key_provider
        .load_private_key(key.clone_key())
        .map_err(|e| {
            vec![err(
                key_key,
                format!(
                    "{} is not a usable private key: {e}; use an RSA, ECDSA (P-256/P-384) or \
                     Ed25519 key",
                    key_path.display()
                ),
            )]
        })?;
    let ck = CertifiedKey::new(certs.clone(), signing);
    match ck.keys_match() {
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
            return Err(vec![err(
                key_key,
                format!(
                    "the private key in {} does not match the certificate in {} (the first \
                     certificate of the chain): give the key the certificate was issued for",
                    key_path.display(),
                    cert_path.display()
                ),
            )])
        }
        Err(e) => {
            return Err(vec![err(
                cert_key,
                format!(
                    "the first certificate in {} cannot be parsed: {e}",
                    cert_path.display()
                ),
            )])
        }
    }
    Ok((certs, key, Arc::new(ck)))
}

/// Serves one certificate whatever name the client asks for with SNI (or none).
#[derive(Debug)]
struct FixedCert(Arc<CertifiedKey>);

impl ResolvesServerCert for FixedCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}

/// The rustls server configuration of the TLS listener `listen[index]`.
pub fn server_config(
    index: usize,
    files: &ListenerFiles,
) -> Result<Arc<ServerConfig>, Vec<TlsError>> {
    let at = |k: &str| format!("listen[{index}].{k}");
    let certified = certified_key(&files.cert, &at("cert"), &files.key, &at("key"));
    let verifier = files.client_ca.as_ref().map(|ca| {
        let roots = load_roots(ca, &at("client_ca"))?;
        WebPkiClientVerifier::builder_with_provider(roots, provider())
            .build()
            .map_err(|e| {
                err(
                    &at("client_ca"),
                    format!("cannot verify clients with {}: {e}", ca.display()),
                )
            })
    });
    let (ck, verifier) = match (certified, verifier.transpose()) {
        (Ok((_, _, ck)), Ok(v)) => (ck, v),
        (c, v) => {
            let mut errors = c.err().unwrap_or_default();
            errors.extend(v.err());
            return Err(errors);
        }
    };
    let builder = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(VERSIONS)
        .map_err(|e| vec![err(&at("cert"), format!("cannot set up TLS: {e}"))])?;
    let builder = match verifier {
        Some(v) => builder.with_client_cert_verifier(v),
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(
        builder.with_cert_resolver(Arc::new(FixedCert(ck))),
    ))
}

/// A rustls client configuration trusting `roots`, presenting `identity` if given.
fn client_config(
    roots: Arc<RootCertStore>,
    identity: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
    key_key: &str,
) -> Result<Arc<ClientConfig>, TlsError> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(VERSIONS)
        .map_err(|e| err(key_key, format!("cannot set up TLS: {e}")))?
        .with_root_certificates(roots);
    let config = match identity {
        Some((certs, key)) => builder
            .with_client_auth_cert(certs, key)
            .map_err(|e| err(key_key, format!("cannot use this client identity: {e}")))?,
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

/// How to reach one TLS peer: whom to trust, what to present, which name to expect.
#[derive(Clone, Debug)]
pub struct ClientSide {
    pub config: Arc<ClientConfig>,
    pub server_name: ServerName<'static>,
}

/// Everything built from one config: swapped as a whole.
struct Material {
    /// By listener index: `Some` for TLS listeners.
    servers: Vec<Option<Arc<ServerConfig>>>,
    /// `[tls] ca` (peers that are not destinations).
    default_client: Option<Arc<ClientConfig>>,
    /// By destination index: `Some` for TLS destinations.
    destinations: Vec<Option<ClientSide>>,
}

/// Builds (and so checks) every TLS configuration: all problems, with their key paths.
fn build(listeners: &[Option<&ListenerFiles>], tls: &TlsConfig) -> Result<Material, Vec<TlsError>> {
    let mut errors = Vec::new();
    let mut servers = Vec::with_capacity(listeners.len());
    for (i, files) in listeners.iter().enumerate() {
        servers.push(files.and_then(|f| match server_config(i, f) {
            Ok(c) => Some(c),
            Err(e) => {
                errors.extend(e);
                None
            }
        }));
    }
    let default_roots = tls
        .ca
        .as_ref()
        .and_then(|ca| match load_roots(ca, "tls.ca") {
            Ok(r) => Some(r),
            Err(e) => {
                errors.push(e);
                None
            }
        });
    let default_client =
        default_roots
            .clone()
            .and_then(|roots| match client_config(roots, None, "tls.ca") {
                Ok(c) => Some(c),
                Err(e) => {
                    errors.push(e);
                    None
                }
            });
    let mut destinations = Vec::with_capacity(tls.destinations.len());
    for (i, files) in tls.destinations.iter().enumerate() {
        let Some(files) = files else {
            destinations.push(None);
            continue;
        };
        match destination_side(
            i,
            files,
            tls,
            default_roots.as_ref(),
            default_client.as_ref(),
        ) {
            Ok(side) => destinations.push(side),
            Err(e) => {
                errors.extend(e);
                destinations.push(None);
            }
        }
    }
    if errors.is_empty() {
        Ok(Material {
            servers,
            default_client,
            destinations,
        })
    } else {
        Err(errors)
    }
}

/// The client side of destination `i`. `Ok(None)` only when `[tls] ca` itself failed (its
/// error is already reported).
fn destination_side(
    i: usize,
    files: &DestinationFiles,
    tls: &TlsConfig,
    default_roots: Option<&Arc<RootCertStore>>,
    default_client: Option<&Arc<ClientConfig>>,
) -> Result<Option<ClientSide>, Vec<TlsError>> {
    let at = |k: &str| format!("destination[{i}].{k}");
    let mut errors = Vec::new();
    let server_name = match ServerName::try_from(files.server_name.clone()) {
        Ok(n) => Some(n),
        Err(_) => {
            errors.push(err(
                &at("server_name"),
                format!(
                    "{:?} is neither a DNS name nor an IP address: write the name the \
                     destination's certificate carries",
                    files.server_name
                ),
            ));
            None
        }
    };
    let roots = match &files.ca {
        Some(ca) => match load_roots(ca, &at("ca")) {
            Ok(r) => Some(r),
            Err(e) => {
                errors.push(e);
                None
            }
        },
        None if tls.ca.is_none() => {
            errors.push(err(
                &at("ca"),
                "a TLS destination needs the CA certificate(s) that sign its certificate: set \
                 ca = \"/path/to/ca.pem\" here, or a node-wide [tls] ca = \"...\" (pointsman \
                 ships no public roots; for a publicly signed peer point ca at the system \
                 bundle, e.g. \"/etc/ssl/certs/ca-certificates.crt\")"
                    .into(),
            ));
            None
        }
        None => default_roots.cloned(),
    };
    let identity = match (&files.client_cert, &files.client_key) {
        (Some(cert), Some(key)) => {
            match certified_key(cert, &at("client_cert"), key, &at("client_key")) {
                Ok((certs, key, _)) => Some(Some((certs, key))),
                Err(e) => {
                    errors.extend(e);
                    None
                }
            }
        }
        _ => Some(None),
    };
    if !errors.is_empty() {
        return Err(errors);
    }
    let (Some(server_name), Some(identity)) = (server_name, identity) else {
        return Ok(None);
    };
    let config = match (&files.ca, identity, default_client) {
        // Same trust, no identity: share the node-wide configuration (and its sessions).
        (None, None, Some(shared)) => shared.clone(),
        (_, identity, _) => {
            let Some(roots) = roots else { return Ok(None) };
            client_config(roots, identity, &at("client_key")).map_err(|e| vec![e])?
        }
    };
    Ok(Some(ClientSide {
        config,
        server_name,
    }))
}

/// Checks every TLS file a config names (readable, PEM, key matches certificate, CA bundles
/// usable), as `pointsman check` and every load do. `listeners` is by listener index.
pub fn check(listeners: &[Option<&ListenerFiles>], tls: &TlsConfig) -> Vec<TlsError> {
    build(listeners, tls).err().unwrap_or_default()
}

/// What the handshakes use now, by listener and by peer address.
struct Current {
    servers: Vec<Option<Arc<ServerConfig>>>,
    /// By destination index: `Some` for TLS destinations.
    destinations: Vec<Option<ClientSide>>,
    by_addr: HashMap<SocketAddr, ClientSide>,
    default_client: Option<Arc<ClientConfig>>,
}

/// Where a destination is: its index in the config (a target found by DNS: its
/// destination's), and an address.
pub type DestinationAddr = (usize, SocketAddr);

/// The TLS material in force, swapped whole on reload. Shared by the transport (handshakes)
/// and the prober.
pub struct Certificates {
    handshake_timeout: Duration,
    /// Names of the listeners bound at start, by index: a reload matches listeners by name.
    listener_names: Vec<String>,
    current: ArcSwap<Current>,
}

impl std::fmt::Debug for Certificates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Certificates")
            .field("handshake_timeout", &self.handshake_timeout)
            .field("listeners", &self.listener_names)
            .finish_non_exhaustive()
    }
}

/// One listener as [`Certificates`] sees it: its name and TLS files, if any.
pub type ListenerRef<'a> = (&'a str, Option<&'a ListenerFiles>);

impl Certificates {
    /// Loads every TLS file of a config. `listeners` is by listener index; `addrs` are where
    /// the destinations are (by destination index, as `tls.destinations`).
    pub fn load(
        listeners: &[ListenerRef<'_>],
        tls: &TlsConfig,
        addrs: &[DestinationAddr],
    ) -> Result<Certificates, Vec<TlsError>> {
        install_provider();
        let files: Vec<_> = listeners.iter().map(|(_, f)| *f).collect();
        let material = build(&files, tls)?;
        Ok(Certificates {
            handshake_timeout: tls.handshake_timeout,
            listener_names: listeners.iter().map(|(n, _)| n.to_string()).collect(),
            current: ArcSwap::from_pointee(current(material, addrs)),
        })
    }

    /// Re-reads every TLS file of `listeners`/`tls` (the new config) and, if all are good,
    /// swaps them in for the next handshakes; established connections are not touched.
    /// Listeners are matched by name with those bound at start: a bound TLS listener absent
    /// from the new config keeps its certificate (listeners change on restart). On any error
    /// nothing changes and every problem is returned.
    pub fn reload(
        &self,
        listeners: &[ListenerRef<'_>],
        tls: &TlsConfig,
        addrs: &[DestinationAddr],
    ) -> Result<(), Vec<TlsError>> {
        let by_name: HashMap<&str, (usize, Option<&ListenerFiles>)> = listeners
            .iter()
            .enumerate()
            .map(|(i, (n, f))| (*n, (i, *f)))
            .collect();
        // The new files of each bound listener, at its index in the new config (so errors name
        // the new file's keys).
        let mut files: Vec<Option<&ListenerFiles>> = vec![None; listeners.len()];
        let mut bound_at = Vec::with_capacity(self.listener_names.len());
        for name in &self.listener_names {
            match by_name.get(name.as_str()) {
                Some(&(i, f)) => {
                    files[i] = f;
                    bound_at.push(Some(i));
                }
                None => bound_at.push(None),
            }
        }
        let mut material = build(&files, tls)?;
        let old = self.current.load();
        let servers = bound_at
            .iter()
            .enumerate()
            .map(|(bound, at)| match at {
                Some(i) => material
                    .servers
                    .get_mut(*i)
                    .and_then(Option::take)
                    .or_else(|| old.servers.get(bound).cloned().flatten()),
                None => old.servers.get(bound).cloned().flatten(),
            })
            .collect();
        material.servers = servers;
        self.current.store(Arc::new(current(material, addrs)));
        Ok(())
    }

    /// Puts the TLS destinations at `addrs` for the next connections (their addresses found
    /// by DNS changed); nothing is re-read.
    pub fn set_addresses(&self, addrs: &[DestinationAddr]) {
        let old = self.current.load();
        self.current.store(Arc::new(Current {
            servers: old.servers.clone(),
            by_addr: by_addr(&old.destinations, addrs),
            destinations: old.destinations.clone(),
            default_client: old.default_client.clone(),
        }));
    }

    /// Whether listener `index` serves TLS.
    pub fn serves(&self, index: usize) -> bool {
        self.current
            .load()
            .servers
            .get(index)
            .is_some_and(Option::is_some)
    }

    /// How a TLS connection to `to` is made: the destination at that address, else a peer
    /// verified against `[tls] ca` by its IP address. `None`: nothing to verify it with.
    pub fn client_for(&self, to: SocketAddr) -> Option<ClientSide> {
        let current = self.current.load();
        if let Some(side) = current.by_addr.get(&to) {
            return Some(side.clone());
        }
        current.default_client.as_ref().map(|config| ClientSide {
            config: config.clone(),
            server_name: ServerName::IpAddress(to.ip().into()),
        })
    }

    /// The server side of a connection accepted on listener `index`, within the handshake
    /// timeout.
    pub async fn accept(
        &self,
        index: usize,
        stream: TcpStream,
    ) -> std::io::Result<server::TlsStream<TcpStream>> {
        let config = self
            .current
            .load()
            .servers
            .get(index)
            .cloned()
            .flatten()
            .ok_or_else(|| {
                std::io::Error::other(format!("listener {index} is not a TLS listener"))
            })?;
        let handshake = TlsAcceptor::from(config).accept(stream);
        match tokio::time::timeout(self.handshake_timeout, handshake).await {
            Ok(r) => r,
            Err(_) => Err(timed_out()),
        }
    }

    /// The client side of a connection to `to`, within the handshake timeout.
    pub async fn connect<S>(
        &self,
        to: SocketAddr,
        stream: S,
    ) -> std::io::Result<client::TlsStream<S>>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        let side = self.client_for(to).ok_or_else(|| {
            std::io::Error::other(format!(
                "no TLS trust for {to}: it is not a TLS destination and [tls] ca is not set"
            ))
        })?;
        let handshake = TlsConnector::from(side.config).connect(side.server_name, stream);
        match tokio::time::timeout(self.handshake_timeout, handshake).await {
            Ok(r) => r,
            Err(_) => Err(timed_out()),
        }
    }
}

fn timed_out() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::TimedOut, "TLS handshake timed out")
}

fn current(material: Material, addrs: &[DestinationAddr]) -> Current {
    Current {
        servers: material.servers,
        by_addr: by_addr(&material.destinations, addrs),
        destinations: material.destinations,
        default_client: material.default_client,
    }
}

/// The TLS destinations' settings by address.
fn by_addr(
    destinations: &[Option<ClientSide>],
    addrs: &[DestinationAddr],
) -> HashMap<SocketAddr, ClientSide> {
    let mut by_addr = HashMap::new();
    for (index, addr) in addrs {
        // Two TLS destinations on one address share its connections: the first one's
        // settings apply (connections are reused by address).
        if let Some(Some(side)) = destinations.get(*index) {
            by_addr.entry(*addr).or_insert_with(|| side.clone());
        }
    }
    by_addr
}

#[cfg(test)]
pub(crate) mod tests;
