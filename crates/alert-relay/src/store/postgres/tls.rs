//! `sslmode` as libpq spells it, and the rustls configuration for each (ring, the workspace's
//! one provider). tokio-postgres knows only `disable`, `prefer` and `require`, and verifies
//! nothing itself: the mode is taken out of the URL here and the verification is rustls's.

use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};

/// libpq's `sslmode` values this backend accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum SslMode {
    Disable,
    /// libpq's default: TLS when the server offers it, unverified.
    Prefer,
    /// TLS, the certificate not verified.
    Require,
    /// TLS, the chain verified against the system roots or `ca_file`, and the host name.
    VerifyFull,
}

impl SslMode {
    fn parse(value: &str) -> Result<Self, String> {
        Ok(match value {
            "disable" => SslMode::Disable,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-full" => SslMode::VerifyFull,
            other => {
                return Err(format!(
                    "sslmode={other} is not supported (disable, prefer, require, verify-full)"
                ));
            }
        })
    }

    pub(super) fn driver_mode(self) -> postgres::config::SslMode {
        match self {
            SslMode::Disable => postgres::config::SslMode::Disable,
            SslMode::Prefer => postgres::config::SslMode::Prefer,
            SslMode::Require | SslMode::VerifyFull => postgres::config::SslMode::Require,
        }
    }
}

/// Takes `sslmode` out of a URL's query: (the URL without it, the mode; `prefer` when absent).
pub(super) fn split_sslmode(url: &str) -> Result<(String, SslMode), String> {
    let Some((base, query)) = url.split_once('?') else {
        return Ok((url.to_owned(), SslMode::Prefer));
    };
    let mut mode = SslMode::Prefer;
    let mut kept = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("sslmode", value)) => mode = SslMode::parse(value)?,
            _ => kept.push(pair),
        }
    }
    let url = if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    Ok((url, mode))
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The rustls client configuration for `mode` (not called for `disable`).
pub(super) fn client_config(
    mode: SslMode,
    ca_file: Option<&Path>,
) -> Result<rustls::ClientConfig, String> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?;
    let config = match mode {
        SslMode::VerifyFull => builder
            .with_root_certificates(roots(ca_file)?)
            .with_no_client_auth(),
        _ => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerification(provider())))
            .with_no_client_auth(),
    };
    Ok(config)
}

/// `ca_file`'s certificates, else the system's roots.
fn roots(ca_file: Option<&Path>) -> Result<RootCertStore, String> {
    let mut store = RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let pem = std::fs::read(path)
                .map_err(|e| format!("cannot read ca_file {}: {e}", path.display()))?;
            let certs = rustls_pki_types::pem::PemObject::pem_slice_iter(&pem)
                .collect::<Result<Vec<CertificateDer<'static>>, _>>()
                .map_err(|e| format!("ca_file {}: {e}", path.display()))?;
            let (added, _) = store.add_parsable_certificates(certs);
            if added == 0 {
                return Err(format!("ca_file {}: no certificate in it", path.display()));
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            store.add_parsable_certificates(found.certs);
            if store.is_empty() {
                return Err(
                    "sslmode=verify-full: no system root certificates found (install \
                     ca-certificates or set ca_file)"
                        .into(),
                );
            }
        }
    }
    Ok(store)
}

/// `sslmode=require`: encrypted, the peer not authenticated (as libpq without a root file).
/// Handshake signatures are still checked, so the session keys belong to the certificate.
#[derive(Debug)]
struct NoVerification(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sslmode_is_taken_out_of_the_url() {
        let split = |u: &str| split_sslmode(u).expect("parses");
        assert_eq!(
            split("postgres://u@h/db"),
            ("postgres://u@h/db".into(), SslMode::Prefer)
        );
        assert_eq!(
            split("postgres://u@h/db?sslmode=verify-full"),
            ("postgres://u@h/db".into(), SslMode::VerifyFull)
        );
        assert_eq!(
            split("postgres://u@h/db?connect_timeout=5&sslmode=require&application_name=x"),
            (
                "postgres://u@h/db?connect_timeout=5&application_name=x".into(),
                SslMode::Require
            )
        );
        assert_eq!(
            split("postgres://u@h/db?sslmode=disable").1,
            SslMode::Disable
        );
        let err = split_sslmode("postgres://u@h/db?sslmode=verify-ca").expect_err("refused");
        assert!(err.contains("verify-ca"), "{err}");
    }

    #[test]
    fn every_mode_builds_a_configuration_with_ring() {
        for mode in [SslMode::Prefer, SslMode::Require] {
            client_config(mode, None).expect("config");
        }
        let err = client_config(SslMode::VerifyFull, Some(Path::new("/nonexistent/ca.pem")))
            .expect_err("no file");
        assert!(err.contains("/nonexistent/ca.pem"), "{err}");
    }
}
