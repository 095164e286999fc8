//! `tls_server_config`: validation into [`TlsSettings`] (pure), assembly of a rustls server
//! config from them (reads the PEM files), and the `client_allowed_sans` check.

use std::borrow::Cow;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::{CryptoProvider, SupportedKxGroup, ring};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::ClientCertVerifier;
use rustls::{RootCertStore, ServerConfig, SupportedCipherSuite, SupportedProtocolVersion};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio_rustls::TlsAcceptor;

use super::WebConfigError;
use super::file::{TlsSection, non_empty};

/// Validated `tls_server_config`, ready to build once the PEM data is read.
#[derive(Debug)]
pub(super) struct TlsSettings {
    cert: Pem,
    key: Pem,
    client_auth: ClientAuth,
    versions: Vec<&'static SupportedProtocolVersion>,
    /// `None`: rustls' defaults. Only TLS 1.2 suites; TLS 1.3 ones are always all enabled.
    tls12_suites: Option<Vec<SupportedCipherSuite>>,
    /// `None`: rustls' defaults.
    kx_groups: Option<Vec<&'static dyn SupportedKxGroup>>,
    prefer_server_cipher_suites: bool,
    allowed_sans: Vec<ServerName<'static>>,
}

#[derive(Debug)]
enum ClientAuth {
    None,
    /// `VerifyClientCertIfGiven`: anonymous clients are accepted, others must chain to the CAs.
    Optional(Pem),
    /// `RequireAndVerifyClientCert`.
    Required(Pem),
}

/// PEM data and the key it came from: `<name>_file` (a file, resolved and watched) or `<name>`
/// (inline in the YAML).
struct Pem {
    key: &'static str,
    source: PemSource,
}

enum PemSource {
    File(PathBuf),
    Inline(String),
}

impl fmt::Debug for Pem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.source {
            PemSource::File(path) => write!(f, "{} {}", self.key, path.display()),
            // Inline PEM may be a private key.
            PemSource::Inline(_) => write!(f, "{} (inline)", self.key),
        }
    }
}

/// Client auth types exporter-toolkit knows that rustls cannot do: it always verifies a
/// certificate the client sends against the configured CAs.
const UNSUPPORTED_CLIENT_AUTH: [&str; 3] = [
    "RequestClientCert",
    "RequireAnyClientCert",
    "RequireClientCert",
];

/// Go/IANA names of TLS 1.3 suites. Go accepts them in `cipher_suites` but does not let them be
/// configured; rustls neither, so they are accepted and ignored the same way.
const TLS13_SUITE_NAMES: [&str; 3] = [
    "TLS_AES_128_GCM_SHA256",
    "TLS_AES_256_GCM_SHA384",
    "TLS_CHACHA20_POLY1305_SHA256",
];

/// TLS versions by their exporter-toolkit names; ordered, so that `min <= max` can be checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum TlsVersion {
    Tls10,
    Tls11,
    Tls12,
    Tls13,
}

impl fmt::Display for TlsVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Tls10 => "TLS10",
            Self::Tls11 => "TLS11",
            Self::Tls12 => "TLS12",
            Self::Tls13 => "TLS13",
        })
    }
}

/// Validates `tls_server_config`. `Ok(None)` means plain HTTP: as in exporter-toolkit, TLS is on
/// once any certificate, key, client CA or client auth type is set, and then it needs both a
/// certificate and a key.
pub(super) fn settings(
    section: TlsSection,
    base_dir: &Path,
    warnings: &mut Vec<String>,
) -> Result<Option<TlsSettings>, WebConfigError> {
    let cert = Pem::pick(
        "cert",
        section.cert,
        "cert_file",
        section.cert_file,
        base_dir,
    )?;
    let key = Pem::pick("key", section.key, "key_file", section.key_file, base_dir)?;
    let client_ca = Pem::pick(
        "client_ca",
        section.client_ca,
        "client_ca_file",
        section.client_ca_file,
        base_dir,
    )?;
    let client_auth_type = non_empty(section.client_auth_type);
    if cert.is_none() && key.is_none() && client_ca.is_none() && client_auth_type.is_none() {
        let ignored = section.cipher_suites.is_some()
            || section.curve_preferences.is_some()
            || section.min_version.is_some()
            || section.max_version.is_some()
            || section.prefer_server_cipher_suites.is_some()
            || section.client_allowed_sans.is_some();
        if ignored {
            warnings.push(
                "tls_server_config: no certificate or key is set, so TLS is off and the other \
                 TLS settings are ignored"
                    .to_owned(),
            );
        }
        return Ok(None);
    }
    let cert = cert.ok_or_else(|| missing("cert_file", "cert"))?;
    let key = key.ok_or_else(|| missing("key_file", "key"))?;

    let client_auth = client_auth(client_auth_type.as_deref(), client_ca)?;
    let allowed_sans = allowed_sans(section.client_allowed_sans)?;
    if !allowed_sans.is_empty() && !matches!(client_auth, ClientAuth::Required(_)) {
        return Err(WebConfigError::invalid(
            "tls_server_config.client_allowed_sans",
            "requires client_auth_type: RequireAndVerifyClientCert",
        ));
    }

    let min = version(
        "min_version",
        section.min_version,
        TlsVersion::Tls12,
        warnings,
    )?;
    let max = version(
        "max_version",
        section.max_version,
        TlsVersion::Tls13,
        warnings,
    )?;
    if min > max {
        return Err(WebConfigError::invalid(
            "tls_server_config.min_version",
            format!("{min} is above max_version {max}"),
        ));
    }
    let versions = [
        (TlsVersion::Tls12, &rustls::version::TLS12),
        (TlsVersion::Tls13, &rustls::version::TLS13),
    ]
    .into_iter()
    .filter(|(version, _)| (min..=max).contains(version))
    .map(|(_, supported)| supported)
    .collect();

    Ok(Some(TlsSettings {
        cert,
        key,
        client_auth,
        versions,
        tls12_suites: list(section.cipher_suites)
            .map(|names| cipher_suites(&names, warnings))
            .transpose()?,
        kx_groups: list(section.curve_preferences)
            .map(|names| kx_groups(&names))
            .transpose()?,
        // exporter-toolkit's default is true.
        prefer_server_cipher_suites: section.prefer_server_cipher_suites.unwrap_or(true),
        allowed_sans,
    }))
}

fn missing(file_key: &str, inline_key: &str) -> WebConfigError {
    WebConfigError::invalid(
        format!("tls_server_config.{file_key}"),
        format!("missing; TLS needs {file_key} or {inline_key} (and a key to go with it)"),
    )
}

/// An empty list means the same as no list: the defaults.
fn list(names: Option<Vec<String>>) -> Option<Vec<String>> {
    names.filter(|names| !names.is_empty())
}

impl Pem {
    fn pick(
        inline_key: &'static str,
        inline: Option<String>,
        file_key: &'static str,
        file: Option<String>,
        base_dir: &Path,
    ) -> Result<Option<Self>, WebConfigError> {
        match (non_empty(inline), non_empty(file)) {
            (Some(_), Some(_)) => Err(WebConfigError::invalid(
                format!("tls_server_config.{inline_key}"),
                format!("set either {inline_key} or {file_key}, not both"),
            )),
            (Some(pem), None) => Ok(Some(Self {
                key: inline_key,
                source: PemSource::Inline(pem),
            })),
            (None, Some(file)) => Ok(Some(Self {
                key: file_key,
                source: PemSource::File(base_dir.join(file)),
            })),
            (None, None) => Ok(None),
        }
    }

    fn path(&self) -> Option<&Path> {
        match &self.source {
            PemSource::File(path) => Some(path),
            PemSource::Inline(_) => None,
        }
    }

    fn bytes(&self) -> Result<Cow<'_, [u8]>, WebConfigError> {
        match &self.source {
            PemSource::File(path) => {
                std::fs::read(path)
                    .map(Cow::Owned)
                    .map_err(|source| WebConfigError::Io {
                        what: self.yaml_key(),
                        path: path.clone(),
                        source,
                    })
            }
            PemSource::Inline(pem) => Ok(Cow::Borrowed(pem.as_bytes())),
        }
    }

    fn yaml_key(&self) -> String {
        format!("tls_server_config.{}", self.key)
    }

    fn invalid(&self, message: impl fmt::Display) -> WebConfigError {
        let location = match &self.source {
            PemSource::File(path) => format!("{}: ", path.display()),
            PemSource::Inline(_) => String::new(),
        };
        WebConfigError::invalid(self.yaml_key(), format!("{location}{message}"))
    }

    fn certificates(&self) -> Result<Vec<CertificateDer<'static>>, WebConfigError> {
        let certs = CertificateDer::pem_slice_iter(&self.bytes()?)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|error| self.invalid(format!("bad PEM: {error}")))?;
        if certs.is_empty() {
            return Err(self.invalid("no CERTIFICATE block found"));
        }
        Ok(certs)
    }

    fn private_key(&self) -> Result<PrivateKeyDer<'static>, WebConfigError> {
        PrivateKeyDer::from_pem_slice(&self.bytes()?)
            .map_err(|error| self.invalid(format!("no usable private key: {error}")))
    }
}

fn client_auth(
    client_auth_type: Option<&str>,
    client_ca: Option<Pem>,
) -> Result<ClientAuth, WebConfigError> {
    const KEY: &str = "tls_server_config.client_auth_type";
    let kind = client_auth_type.unwrap_or("NoClientCert");
    let auth = match (kind, client_ca) {
        ("NoClientCert", None) => ClientAuth::None,
        ("NoClientCert", Some(ca)) => {
            return Err(WebConfigError::invalid(
                KEY,
                format!(
                    "{} is set, but client_auth_type is NoClientCert; \
                     use RequireAndVerifyClientCert or VerifyClientCertIfGiven",
                    ca.key
                ),
            ));
        }
        ("VerifyClientCertIfGiven" | "RequireAndVerifyClientCert", None) => {
            return Err(WebConfigError::invalid(
                "tls_server_config.client_ca_file",
                format!("client_auth_type {kind} needs client_ca_file or client_ca"),
            ));
        }
        ("VerifyClientCertIfGiven", Some(ca)) => ClientAuth::Optional(ca),
        ("RequireAndVerifyClientCert", Some(ca)) => ClientAuth::Required(ca),
        (unsupported, _) if UNSUPPORTED_CLIENT_AUTH.contains(&unsupported) => {
            return Err(WebConfigError::invalid(
                KEY,
                format!(
                    "{unsupported} is not supported (client certificates are always verified); \
                     use RequireAndVerifyClientCert or VerifyClientCertIfGiven"
                ),
            ));
        }
        (unknown, _) => {
            return Err(WebConfigError::invalid(
                KEY,
                format!(
                    "unknown value {unknown:?}; expected NoClientCert, VerifyClientCertIfGiven \
                     or RequireAndVerifyClientCert"
                ),
            ));
        }
    };
    Ok(auth)
}

fn allowed_sans(sans: Option<Vec<String>>) -> Result<Vec<ServerName<'static>>, WebConfigError> {
    const KEY: &str = "tls_server_config.client_allowed_sans";
    let Some(sans) = sans else {
        return Ok(Vec::new());
    };
    if sans.is_empty() {
        // exporter-toolkit would turn every client away; say so instead.
        return Err(WebConfigError::invalid(
            KEY,
            "empty list allows no client; remove the key to allow any verified client",
        ));
    }
    sans.iter()
        .map(|san| {
            ServerName::try_from(san.as_str())
                .map(|name| name.to_owned())
                .map_err(|_| {
                    WebConfigError::invalid(
                        KEY,
                        format!(
                            "{san:?} is neither a DNS name nor an IP address \
                             (email and URI SANs are not supported)"
                        ),
                    )
                })
        })
        .collect()
}

fn version(
    name: &'static str,
    value: Option<String>,
    default: TlsVersion,
    warnings: &mut Vec<String>,
) -> Result<TlsVersion, WebConfigError> {
    let version = match non_empty(value).as_deref() {
        None => return Ok(default),
        Some("TLS10") => TlsVersion::Tls10,
        Some("TLS11") => TlsVersion::Tls11,
        Some("TLS12") => TlsVersion::Tls12,
        Some("TLS13") => TlsVersion::Tls13,
        Some(other) => {
            return Err(WebConfigError::invalid(
                format!("tls_server_config.{name}"),
                format!("unknown TLS version {other:?}; expected TLS10, TLS11, TLS12 or TLS13"),
            ));
        }
    };
    if version < TlsVersion::Tls12 {
        warnings.push(format!(
            "tls_server_config.{name}: {version} is not available (rustls implements TLS 1.2 \
             and 1.3 only); using TLS12"
        ));
        return Ok(TlsVersion::Tls12);
    }
    Ok(version)
}

fn cipher_suites(
    names: &[String],
    warnings: &mut Vec<String>,
) -> Result<Vec<SupportedCipherSuite>, WebConfigError> {
    let mut suites = Vec::new();
    for name in names {
        if TLS13_SUITE_NAMES.contains(&name.as_str()) {
            warnings.push(format!(
                "tls_server_config.cipher_suites: {name} ignored; TLS 1.3 suites are not \
                 configurable and always enabled"
            ));
            continue;
        }
        let suite = tls12_suites()
            .find(|suite| suite.suite().as_str() == Some(name.as_str()))
            .ok_or_else(|| {
                let supported: Vec<_> = tls12_suites()
                    .filter_map(|suite| suite.suite().as_str())
                    .collect();
                WebConfigError::invalid(
                    "tls_server_config.cipher_suites",
                    format!(
                        "unknown or unsupported cipher suite {name:?}; supported: {}",
                        supported.join(", ")
                    ),
                )
            })?;
        suites.push(suite);
    }
    Ok(suites)
}

/// The TLS 1.2 suites of rustls' ring provider, which rustls names by their IANA (and Go) names.
fn tls12_suites() -> impl Iterator<Item = SupportedCipherSuite> {
    ring::ALL_CIPHER_SUITES
        .iter()
        .copied()
        .filter(|suite| matches!(suite, SupportedCipherSuite::Tls12(_)))
}

fn kx_groups(names: &[String]) -> Result<Vec<&'static dyn SupportedKxGroup>, WebConfigError> {
    names
        .iter()
        .map(|name| {
            Ok(match name.as_str() {
                "CurveP256" => ring::kx_group::SECP256R1,
                "CurveP384" => ring::kx_group::SECP384R1,
                "X25519" => ring::kx_group::X25519,
                other => {
                    return Err(WebConfigError::invalid(
                        "tls_server_config.curve_preferences",
                        format!(
                            "unknown or unsupported curve {other:?}; supported: CurveP256, \
                             CurveP384, X25519"
                        ),
                    ));
                }
            })
        })
        .collect()
}

impl TlsSettings {
    pub(super) fn requires_client_certificate(&self) -> bool {
        matches!(self.client_auth, ClientAuth::Required(_))
    }

    /// The files these settings read.
    pub(super) fn files(&self) -> impl Iterator<Item = &Path> {
        let ca = match &self.client_auth {
            ClientAuth::None => None,
            ClientAuth::Optional(ca) | ClientAuth::Required(ca) => Some(ca),
        };
        [Some(&self.cert), Some(&self.key), ca]
            .into_iter()
            .flatten()
            .filter_map(Pem::path)
    }

    /// Reads the PEM data and assembles the rustls config.
    pub(super) fn build(&self) -> Result<TlsServer, WebConfigError> {
        let provider = Arc::new(self.provider());
        let verifier = self.client_verifier(&provider)?;
        let certs = self.cert.certificates()?;
        let key = self.key.private_key()?;
        let mut config = ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_protocol_versions(&self.versions)
            .map_err(|error| WebConfigError::Tls(error.to_string()))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(certs, key)
            .map_err(|error| match error {
                rustls::Error::InconsistentKeys(_) => WebConfigError::Tls(format!(
                    "the private key ({}) does not belong to the certificate ({})",
                    self.key.yaml_key(),
                    self.cert.yaml_key()
                )),
                other => WebConfigError::Tls(format!("certificate or key unusable: {other}")),
            })?;
        config.ignore_client_order = self.prefer_server_cipher_suites;
        // hyper serves HTTP/1.1 only here; advertising h2 would break clients that pick it.
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(TlsServer {
            acceptor: TlsAcceptor::from(Arc::new(config)),
            allowed_sans: self.allowed_sans.clone(),
        })
    }

    /// ring, restricted to the configured suites and groups. Built per config instead of using
    /// the process default provider, so that nothing depends on start-up order.
    fn provider(&self) -> CryptoProvider {
        let mut provider = ring::default_provider();
        if let Some(tls12_suites) = &self.tls12_suites {
            provider
                .cipher_suites
                .retain(|suite| matches!(suite, SupportedCipherSuite::Tls13(_)));
            provider.cipher_suites.extend(tls12_suites);
        }
        if let Some(kx_groups) = &self.kx_groups {
            provider.kx_groups.clone_from(kx_groups);
        }
        provider
    }

    fn client_verifier(
        &self,
        provider: &Arc<CryptoProvider>,
    ) -> Result<Arc<dyn ClientCertVerifier>, WebConfigError> {
        let (ca, optional) = match &self.client_auth {
            ClientAuth::None => return Ok(WebPkiClientVerifier::no_client_auth()),
            ClientAuth::Optional(ca) => (ca, true),
            ClientAuth::Required(ca) => (ca, false),
        };
        let mut roots = RootCertStore::empty();
        for cert in ca.certificates()? {
            roots
                .add(cert)
                .map_err(|error| ca.invalid(format!("unusable CA certificate: {error}")))?;
        }
        let builder =
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots), Arc::clone(provider));
        let builder = if optional {
            builder.allow_unauthenticated()
        } else {
            builder
        };
        builder
            .build()
            .map_err(|error| WebConfigError::Tls(format!("client verifier: {error}")))
    }
}

/// The TLS side of an active config.
pub(super) struct TlsServer {
    acceptor: TlsAcceptor,
    allowed_sans: Vec<ServerName<'static>>,
}

impl TlsServer {
    pub(super) fn acceptor(&self) -> &TlsAcceptor {
        &self.acceptor
    }

    /// `client_allowed_sans`; see [`check_allowed_sans`].
    pub(super) fn check_client_cert(
        &self,
        peer_certificates: Option<&[CertificateDer<'_>]>,
    ) -> Result<(), String> {
        check_allowed_sans(&self.allowed_sans, peer_certificates)
    }
}

/// The client's (already verified) leaf certificate must carry one of the `allowed` names, if
/// any are configured. DNS names match as in server certificate checks (case-insensitive; a
/// wildcard SAN in the certificate covers names in the list); IP addresses match exactly.
fn check_allowed_sans(
    allowed: &[ServerName<'static>],
    peer_certificates: Option<&[CertificateDer<'_>]>,
) -> Result<(), String> {
    if allowed.is_empty() {
        return Ok(());
    }
    let leaf = peer_certificates
        .and_then(<[_]>::first)
        .ok_or("no client certificate to match against client_allowed_sans")?;
    let cert = webpki::EndEntityCert::try_from(leaf)
        .map_err(|error| format!("cannot parse the client certificate: {error}"))?;
    if allowed
        .iter()
        .any(|name| cert.verify_is_valid_for_subject_name(name).is_ok())
    {
        return Ok(());
    }
    let allowed: Vec<_> = allowed.iter().map(ServerName::to_str).collect();
    Err(format!(
        "the client certificate has none of the allowed SANs ({})",
        allowed.join(", ")
    ))
}

impl fmt::Debug for TlsServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsServer")
            .field("allowed_sans", &self.allowed_sans)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(yaml: &str) -> TlsSection {
        serde_saphyr::from_str(yaml).expect("valid YAML")
    }

    fn validate(yaml: &str) -> (Result<Option<TlsSettings>, WebConfigError>, Vec<String>) {
        let mut warnings = Vec::new();
        let result = settings(section(yaml), Path::new("/etc/exporter"), &mut warnings);
        (result, warnings)
    }

    fn accepted(yaml: &str) -> (TlsSettings, Vec<String>) {
        let (result, warnings) = validate(yaml);
        let settings = result.expect(yaml).expect("TLS enabled");
        (settings, warnings)
    }

    fn rejected(yaml: &str) -> String {
        match validate(yaml).0 {
            Ok(_) => panic!("accepted: {yaml}"),
            Err(error) => error.to_string(),
        }
    }

    const BASE: &str = "cert_file: s.crt\nkey_file: s.key\n";

    #[test]
    fn tls_is_off_without_certificate_key_or_client_auth() {
        let (result, warnings) = validate("min_version: TLS13\n");
        assert!(result.expect("valid").is_none());
        assert_eq!(warnings.len(), 1, "the ignored setting is pointed out");
        let (result, warnings) = validate("cert_file: \"\"\n");
        assert!(result.expect("valid").is_none());
        assert!(warnings.is_empty());
    }

    #[test]
    fn defaults() {
        let (settings, warnings) = accepted(BASE);
        assert!(warnings.is_empty());
        assert_eq!(
            settings.versions,
            [&rustls::version::TLS12, &rustls::version::TLS13]
        );
        assert!(settings.prefer_server_cipher_suites);
        assert!(settings.tls12_suites.is_none() && settings.kx_groups.is_none());
        assert!(matches!(settings.client_auth, ClientAuth::None));
        let files: Vec<_> = settings.files().collect();
        assert_eq!(
            files,
            [
                Path::new("/etc/exporter/s.crt"),
                Path::new("/etc/exporter/s.key")
            ]
        );
    }

    #[test]
    fn certificate_and_key_are_both_required() {
        let message = rejected("key_file: s.key\n");
        assert!(
            message.starts_with("tls_server_config.cert_file:"),
            "{message}"
        );
        let message = rejected("cert_file: s.crt\n");
        assert!(
            message.starts_with("tls_server_config.key_file:"),
            "{message}"
        );
        let message = rejected("client_auth_type: RequireAndVerifyClientCert\n");
        assert!(
            message.starts_with("tls_server_config.cert_file:"),
            "{message}"
        );
    }

    #[test]
    fn inline_and_file_exclude_each_other() {
        let message = rejected("cert: x\ncert_file: s.crt\nkey_file: s.key\n");
        assert!(message.starts_with("tls_server_config.cert:"), "{message}");
    }

    #[test]
    fn inline_pem_is_not_watched() {
        let (settings, _) = accepted("cert: inline\nkey_file: s.key\n");
        assert_eq!(
            settings.files().collect::<Vec<_>>(),
            [Path::new("/etc/exporter/s.key")]
        );
    }

    #[test]
    fn client_auth_types() {
        let (settings, _) = accepted(&format!(
            "{BASE}client_auth_type: RequireAndVerifyClientCert\nclient_ca_file: ca.crt\n"
        ));
        assert!(matches!(settings.client_auth, ClientAuth::Required(_)));
        assert!(
            settings
                .files()
                .any(|f| f == Path::new("/etc/exporter/ca.crt"))
        );
        let (settings, _) = accepted(&format!(
            "{BASE}client_auth_type: VerifyClientCertIfGiven\nclient_ca: inline\n"
        ));
        assert!(matches!(settings.client_auth, ClientAuth::Optional(_)));

        for unsupported in UNSUPPORTED_CLIENT_AUTH {
            let message = rejected(&format!("{BASE}client_auth_type: {unsupported}\n"));
            assert!(
                message.starts_with("tls_server_config.client_auth_type:"),
                "{message}"
            );
            assert!(message.contains("not supported"), "{message}");
        }
        let message = rejected(&format!("{BASE}client_auth_type: Sometimes\n"));
        assert!(
            message.starts_with("tls_server_config.client_auth_type:"),
            "{message}"
        );
        assert!(message.contains("Sometimes"), "{message}");

        let message = rejected(&format!("{BASE}client_ca_file: ca.crt\n"));
        assert!(
            message.starts_with("tls_server_config.client_auth_type:"),
            "{message}"
        );
        let message = rejected(&format!(
            "{BASE}client_auth_type: RequireAndVerifyClientCert\n"
        ));
        assert!(
            message.starts_with("tls_server_config.client_ca_file:"),
            "{message}"
        );
    }

    #[test]
    fn allowed_sans_need_required_client_certificates() {
        let verified = format!("{BASE}client_ca_file: ca.crt\nclient_auth_type: ");
        let (settings, _) = accepted(&format!(
            "{verified}RequireAndVerifyClientCert\nclient_allowed_sans: [a.example, 192.0.2.7, \"::1\"]\n"
        ));
        assert_eq!(settings.allowed_sans.len(), 3);

        let message = rejected(&format!(
            "{verified}VerifyClientCertIfGiven\nclient_allowed_sans: [a.example]\n"
        ));
        assert!(
            message.starts_with("tls_server_config.client_allowed_sans:"),
            "{message}"
        );

        for bad in ["ops@example.com", "spiffe://example/ns", "*.example.com"] {
            let message = rejected(&format!(
                "{verified}RequireAndVerifyClientCert\nclient_allowed_sans: [\"{bad}\"]\n"
            ));
            assert!(message.contains(bad), "{message}");
        }
        let message = rejected(&format!(
            "{verified}RequireAndVerifyClientCert\nclient_allowed_sans: []\n"
        ));
        assert!(
            message.starts_with("tls_server_config.client_allowed_sans:"),
            "{message}"
        );
    }

    #[test]
    fn versions() {
        let (settings, warnings) = accepted(&format!("{BASE}min_version: TLS13\n"));
        assert_eq!(settings.versions, [&rustls::version::TLS13]);
        assert!(warnings.is_empty());

        let (settings, warnings) =
            accepted(&format!("{BASE}min_version: TLS10\nmax_version: TLS12\n"));
        assert_eq!(settings.versions, [&rustls::version::TLS12]);
        assert_eq!(warnings.len(), 1);
        assert!(warnings[0].contains("min_version"), "{warnings:?}");

        let message = rejected(&format!("{BASE}min_version: TLS13\nmax_version: TLS12\n"));
        assert!(
            message.starts_with("tls_server_config.min_version:"),
            "{message}"
        );
        let message = rejected(&format!("{BASE}max_version: SSL3\n"));
        assert!(
            message.starts_with("tls_server_config.max_version:"),
            "{message}"
        );
    }

    #[test]
    fn cipher_suites_by_go_name() {
        let (settings, warnings) = accepted(&format!(
            "{BASE}cipher_suites:\n  - TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256\n  - TLS_AES_128_GCM_SHA256\n  - TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256\n"
        ));
        let names: Vec<_> = settings
            .tls12_suites
            .as_ref()
            .expect("suites")
            .iter()
            .map(|suite| suite.suite())
            .collect();
        assert_eq!(
            names,
            [
                rustls::CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
                rustls::CipherSuite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256
            ]
        );
        assert_eq!(warnings.len(), 1, "TLS 1.3 name ignored with a warning");

        // The provider keeps every TLS 1.3 suite and only the listed TLS 1.2 ones, in order.
        let provider = settings.provider();
        assert_eq!(provider.cipher_suites.len(), 3 + 2);
        assert_eq!(
            provider.cipher_suites.last().map(|suite| suite.suite()),
            Some(rustls::CipherSuite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256)
        );

        for bad in [
            "TLS_RSA_WITH_AES_128_CBC_SHA",
            "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA",
            "nope",
        ] {
            let message = rejected(&format!("{BASE}cipher_suites: [{bad}]\n"));
            assert!(
                message.starts_with("tls_server_config.cipher_suites:"),
                "{message}"
            );
            assert!(message.contains(bad), "{message}");
            assert!(
                message.contains("TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384"),
                "{message}"
            );
        }
    }

    #[test]
    fn curves_by_go_name() {
        let (settings, _) = accepted(&format!("{BASE}curve_preferences: [X25519, CurveP256]\n"));
        let groups: Vec<_> = settings
            .provider()
            .kx_groups
            .iter()
            .map(|g| g.name())
            .collect();
        assert_eq!(
            groups,
            [rustls::NamedGroup::X25519, rustls::NamedGroup::secp256r1]
        );
        let message = rejected(&format!("{BASE}curve_preferences: [CurveP521]\n"));
        assert!(
            message.starts_with("tls_server_config.curve_preferences:"),
            "{message}"
        );
        assert!(message.contains("CurveP521"), "{message}");
    }

    #[test]
    fn prefer_server_cipher_suites_can_be_turned_off() {
        let (settings, _) = accepted(&format!("{BASE}prefer_server_cipher_suites: false\n"));
        assert!(!settings.prefer_server_cipher_suites);
    }

    #[test]
    fn allowed_sans_matching() {
        let cert_with = |sans: &[&str]| {
            let sans: Vec<String> = sans.iter().map(|san| (*san).to_owned()).collect();
            let key = rcgen::KeyPair::generate().expect("key");
            let params = rcgen::CertificateParams::new(sans).expect("params");
            params.self_signed(&key).expect("cert").der().clone()
        };
        let allowed = |names: &[&str]| -> Vec<ServerName<'static>> {
            names
                .iter()
                .map(|name| ServerName::try_from(*name).expect("name").to_owned())
                .collect()
        };
        let check = |names: &[&str], cert: &CertificateDer<'static>| {
            check_allowed_sans(&allowed(names), Some(std::slice::from_ref(cert)))
        };

        let cert = cert_with(&["scraper.example", "192.0.2.7"]);
        assert_eq!(check(&["scraper.example"], &cert), Ok(()));
        assert_eq!(check(&["other.example", "SCRAPER.example"], &cert), Ok(()));
        assert_eq!(check(&["192.0.2.7"], &cert), Ok(()));
        let refused = check(&["other.example", "192.0.2.8"], &cert).expect_err("no match");
        assert!(refused.contains("other.example, 192.0.2.8"), "{refused}");
        assert!(check(&["sub.scraper.example"], &cert).is_err());

        let wildcard = cert_with(&["*.scrapers.example"]);
        assert_eq!(check(&["a.scrapers.example"], &wildcard), Ok(()));
        assert!(check(&["scrapers.example"], &wildcard).is_err());

        assert!(check_allowed_sans(&allowed(&["scraper.example"]), None).is_err());
        assert!(check_allowed_sans(&allowed(&["scraper.example"]), Some(&[])).is_err());
        assert_eq!(check_allowed_sans(&[], None), Ok(()), "no list, no check");
    }

    #[test]
    fn inline_pem_errors_name_the_key() {
        let (settings, _) = accepted("cert: not pem\nkey: not pem either\n");
        let message = settings
            .build()
            .map(|_| ())
            .expect_err("bad PEM")
            .to_string();
        assert!(message.starts_with("tls_server_config.cert:"), "{message}");
        assert!(
            !message.contains("not pem"),
            "PEM content is not echoed: {message}"
        );
    }
}
