//! The node's own CA and server certificate, made at first start in `state/tls/` and reused
//! after. Clients trust `ca.pem` (`vmnode account show` prints its path).

use std::path::Path;
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};

use crate::storage::fsutil::write_atomic;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot make the node's certificate")]
    Generate(#[from] rcgen::Error),
    #[error("cannot read or write {path}")]
    Io {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("bad certificate or key in {0}")]
    Pem(std::path::PathBuf),
    #[error("TLS configuration")]
    Rustls(#[from] rustls::Error),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> TlsError + '_ {
    move |source| TlsError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Makes the CA and server certificate if missing; returns the server TLS configuration.
pub fn server_config(
    dir: &Path,
    ip: std::net::IpAddr,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let (ca, cert, key) = (
        dir.join("ca.pem"),
        dir.join("server.pem"),
        dir.join("server.key"),
    );
    if !(ca.exists() && cert.exists() && key.exists()) {
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "vmnode node CA");
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_key = KeyPair::generate()?;
        let ca_cert = ca_params.self_signed(&ca_key)?;
        let mut names = vec![
            "localhost".to_string(),
            "127.0.0.1".to_string(),
            "::1".to_string(),
        ];
        if !ip.is_unspecified() && !names.contains(&ip.to_string()) {
            names.push(ip.to_string());
        }
        let mut params = CertificateParams::new(names)?;
        params.distinguished_name.push(DnType::CommonName, "vmnode");
        let skey = KeyPair::generate()?;
        let scert = params.signed_by(&skey, &ca_cert, &ca_key)?;
        write_atomic(&key, skey.serialize_pem().as_bytes(), 0o600).map_err(io(&key))?;
        write_atomic(&cert, scert.pem().as_bytes(), 0o644).map_err(io(&cert))?;
        write_atomic(&ca, ca_cert.pem().as_bytes(), 0o644).map_err(io(&ca))?;
    }
    let certs = rustls_pemfile::certs(&mut std::io::BufReader::new(
        std::fs::File::open(&cert).map_err(io(&cert))?,
    ))
    .collect::<Result<Vec<_>, _>>()
    .map_err(|_| TlsError::Pem(cert.clone()))?;
    let pkey = rustls_pemfile::private_key(&mut std::io::BufReader::new(
        std::fs::File::open(&key).map_err(io(&key))?,
    ))
    .map_err(|_| TlsError::Pem(key.clone()))?
    .ok_or_else(|| TlsError::Pem(key.clone()))?;
    let cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_single_cert(certs, pkey)?;
    Ok(Arc::new(cfg))
}

/// A client configuration trusting only the node's CA.
pub fn client_config(ca: &Path) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pemfile::certs(&mut std::io::BufReader::new(
        std::fs::File::open(ca).map_err(io(ca))?,
    )) {
        roots
            .add(c.map_err(|_| TlsError::Pem(ca.to_path_buf()))?)
            .map_err(|_| TlsError::Pem(ca.to_path_buf()))?;
    }
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(Arc::new(cfg))
}
