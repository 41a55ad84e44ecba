//! A test certificate authority (`rcgen`): certificates for the TLS listeners, origins and
//! Redis that the tests start.

use std::path::PathBuf;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};

use super::TempDir;

/// A CA and a way to issue leaf certificates for `localhost` and 127.0.0.1.
pub struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
    /// Where the certificates and keys are written (removed when dropped).
    pub dir: TempDir,
}

impl Ca {
    /// A new CA; its certificate is written to `ca.pem`.
    pub fn new(name: &str) -> Ca {
        let dir = TempDir::new(&format!("tls-{name}"));
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, format!("precond test CA {name}"));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key).unwrap();
        std::fs::write(dir.join("ca.pem"), cert.pem()).unwrap();
        Ca { cert, key, dir }
    }

    /// The CA's certificate (PEM).
    pub fn ca_file(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// Issues a certificate for `localhost` and 127.0.0.1, written to `NAME.pem` and
    /// `NAME.key`; returns both paths.
    pub fn issue(&self, name: &str) -> (PathBuf, PathBuf) {
        self.issue_for(name, &["localhost", "127.0.0.1"])
    }

    /// Issues a certificate for the names (and IP addresses) in `sans`, as [`Ca::issue`] does.
    pub fn issue_for(&self, name: &str, sans: &[&str]) -> (PathBuf, PathBuf) {
        let key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, format!("precond {name}"));
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        let (c, k) = (
            self.dir.join(format!("{name}.pem")),
            self.dir.join(format!("{name}.key")),
        );
        std::fs::write(&c, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        (c, k)
    }
}
