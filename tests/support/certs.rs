//! Certificates a test makes for itself: a CA of its own and the identities it issues (rcgen),
//! as PEM text.

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use std::net::IpAddr;

/// A CA of the test's own.
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pub pem: String,
}

/// A certificate and its key, as PEM.
pub struct Identity {
    pub cert: String,
    pub key: String,
}

impl Ca {
    pub fn new(name: &str) -> Ca {
        let key = KeyPair::generate().expect("CA key");
        let mut p = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name.push(DnType::CommonName, name);
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = p.self_signed(&key).expect("CA certificate");
        Ca {
            pem: cert.pem(),
            issuer: Issuer::new(p, key),
        }
    }

    /// A certificate for `names` (the first is also its common name), for `usages`.
    pub fn issue(&self, names: &[String], usages: &[ExtendedKeyUsagePurpose]) -> Identity {
        let key = KeyPair::generate().expect("key");
        let mut p = CertificateParams::new(names.to_vec()).expect("params");
        p.distinguished_name
            .push(DnType::CommonName, names[0].as_str());
        p.extended_key_usages = usages.to_vec();
        let cert = p.signed_by(&key, &self.issuer).expect("certificate");
        Identity {
            cert: cert.pem(),
            key: key.serialize_pem(),
        }
    }

    /// A server certificate for `ip` (and localhost).
    pub fn server(&self, ip: IpAddr) -> Identity {
        self.issue(
            &[ip.to_string(), "localhost".into()],
            &[ExtendedKeyUsagePurpose::ServerAuth],
        )
    }

    pub fn client(&self, name: &str) -> Identity {
        self.issue(&[name.to_string()], &[ExtendedKeyUsagePurpose::ClientAuth])
    }

    /// A node-link certificate for `ip`: the node is server and client of its peers.
    pub fn node(&self, ip: IpAddr) -> Identity {
        self.node_on(&[ip])
    }

    /// A node-link certificate for every address its peers dial it on (its paths).
    pub fn node_on(&self, ips: &[IpAddr]) -> Identity {
        let names: Vec<String> = ips.iter().map(ToString::to_string).collect();
        self.issue(
            &names,
            &[
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
        )
    }
}
