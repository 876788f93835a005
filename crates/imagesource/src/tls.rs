//! The rustls client configuration: which roots to trust (a bundle
//! named with `--ca`, else the system's, else Mozilla's built in when the
//! `webpki-roots` feature is on) and optional public-key pins.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use sha2::{Digest, Sha256};

use crate::http::TlsOptions;

/// Where distributions keep their CA bundle (Debian, Buildroot and Yocto
/// share the first).
const SYSTEM_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/ssl/cert.pem",
];

/// Most bytes read from a CA bundle (Debian's is about 220 KiB).
const MAX_BUNDLE: u64 = 16 << 20;

pub(crate) fn config(opts: &TlsOptions) -> Result<Arc<rustls::ClientConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let roots = Arc::new(roots(opts)?);
    let webpki = WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
        .build()
        .map_err(|e| format!("TLS verifier: {e}"))?;
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?;
    let config = if opts.pins.is_empty() {
        builder.with_webpki_verifier(webpki)
    } else {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Pinned {
                inner: webpki,
                pins: opts.pins.clone(),
            }))
    };
    Ok(Arc::new(config.with_no_client_auth()))
}

fn roots(opts: &TlsOptions) -> Result<RootCertStore, String> {
    if let Some(ca) = &opts.ca_file {
        return load_bundle(ca);
    }
    if let Some(p) = SYSTEM_BUNDLES
        .iter()
        .map(std::path::Path::new)
        .find(|p| p.is_file())
    {
        return load_bundle(p);
    }
    #[cfg(feature = "webpki-roots")]
    {
        Ok(RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        })
    }
    #[cfg(not(feature = "webpki-roots"))]
    Err(format!(
        "no CA bundle: give --ca FILE (none of {} exists)",
        SYSTEM_BUNDLES.join(", ")
    ))
}

fn load_bundle(path: &std::path::Path) -> Result<RootCertStore, String> {
    use std::io::Read;
    let what = path.display();
    let mut pem = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_BUNDLE + 1).read_to_end(&mut pem))
        .map_err(|e| format!("CA bundle {what}: {e}"))?;
    if pem.len() as u64 > MAX_BUNDLE {
        return Err(format!("CA bundle {what}: larger than {MAX_BUNDLE} bytes"));
    }
    let mut store = RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(&pem) {
        let c = c.map_err(|e| format!("CA bundle {what}: {e}"))?;
        store
            .add(c)
            .map_err(|e| format!("CA bundle {what}: a certificate: {e}"))?;
    }
    if store.is_empty() {
        return Err(format!("CA bundle {what}: no PEM certificate in it"));
    }
    Ok(store)
}

/// The usual chain verification, then the leaf's public key must be one
/// of the pins (curl's `--pinnedpubkey`): a pin narrows trust, it never
/// replaces it.
#[derive(Debug)]
struct Pinned {
    inner: Arc<WebPkiServerVerifier>,
    pins: Vec<[u8; 32]>,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let ok =
            self.inner
                .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)?;
        let cert = webpki::EndEntityCert::try_from(end_entity)
            .map_err(|e| rustls::Error::General(format!("server certificate: {e}")))?;
        let hash: [u8; 32] = Sha256::digest(cert.subject_public_key_info().as_ref()).into();
        if self.pins.contains(&hash) {
            Ok(ok)
        } else {
            Err(rustls::Error::General(format!(
                "the server's public key (sha256/{}) matches no --pin",
                crate::pin::encode(&hash)
            )))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}
