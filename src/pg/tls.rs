//! TLS inside the SSH tunnels to a cluster's services, verified against the cluster's own CA
//! bundle (issue 12): Patroni's REST API answers HTTPS only, and PostgreSQL rejects TCP
//! connections without TLS from the cluster network.
//!
//! The tunnel already encrypts the path from plumb to the member's sshd; TLS is still spoken
//! end to end because the services refuse anything else, and because verifying the server
//! certificate proves plumb reached the service the member certificate names (its name or
//! address), not something else listening on that port. Verification is full: the chain must
//! end at a CA of the bundle, the certificate must be valid now and must name the address
//! plumb dialled (member certificates carry the member's address as an IP SAN).
//!
//! PostgreSQL sessions also bind SCRAM to the TLS session (`SCRAM-SHA-256-PLUS` with
//! `tls-server-end-point`, RFC 5929), so a password exchange cannot be relayed.

use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use sha2::{Digest as _, Sha256, Sha384, Sha512};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// Why a trust bundle could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// The bundle holds no certificate.
    #[error("the CA bundle holds no certificate")]
    Empty,
    /// A certificate of the bundle could not be read.
    #[error("a certificate of the CA bundle could not be read: {0}")]
    Pem(String),
    /// A certificate was read but is not a usable trust anchor.
    #[error("a certificate of the CA bundle is not a usable CA: {0}")]
    Anchor(String),
    /// The TLS library refused the configuration.
    #[error("TLS configuration: {0}")]
    Config(String),
    /// The name to verify is neither a DNS name nor an IP address.
    #[error("`{0}` is neither a DNS name nor an IP address to verify a certificate against")]
    ServerName(String),
    /// The handshake failed (the message says why: an unknown issuer, a name mismatch, an
    /// expired certificate, a server that does not speak TLS).
    #[error("TLS handshake with {server}: {source}")]
    Handshake {
        /// The name verified.
        server: String,
        /// The I/O error rustls reports.
        #[source]
        source: io::Error,
    },
}

/// The CAs a cluster's services are verified against: every CA of the cluster's trust bundle
/// (its `tls.ca` and, during a CA rotation, the CAs of `tls.trust`). Cheap to clone.
#[derive(Clone)]
pub struct ClusterTls {
    config: Arc<ClientConfig>,
    anchors: usize,
}

impl fmt::Debug for ClusterTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterTls")
            .field("anchors", &self.anchors)
            .finish_non_exhaustive()
    }
}

impl ClusterTls {
    /// Trusts every certificate of the PEM bundles in `bundles` (one or more CA certificates
    /// each).
    pub fn from_pem<'a>(bundles: impl IntoIterator<Item = &'a [u8]>) -> Result<Self, TlsError> {
        let mut roots = RootCertStore::empty();
        for pem in bundles {
            for cert in CertificateDer::pem_slice_iter(pem) {
                let cert = cert.map_err(|e| TlsError::Pem(e.to_string()))?;
                roots
                    .add(cert)
                    .map_err(|e| TlsError::Anchor(e.to_string()))?;
            }
        }
        if roots.is_empty() {
            return Err(TlsError::Empty);
        }
        let anchors = roots.len();
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Config(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(ClusterTls {
            config: Arc::new(config),
            anchors,
        })
    }

    /// How many CAs are trusted.
    pub fn anchors(&self) -> usize {
        self.anchors
    }

    /// Runs the TLS handshake over `stream`, verifying the server's certificate against the
    /// bundle and against `server` (the DNS name or IP address plumb dialled).
    pub async fn connect<S>(&self, stream: S, server: &str) -> Result<TlsStream<S>, TlsError>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let name = server_name(server)?;
        TlsConnector::from(self.config.clone())
            .connect(name, stream)
            .await
            .map_err(|source| TlsError::Handshake {
                server: server.to_string(),
                source,
            })
    }

    /// A TLS connector for one PostgreSQL session to `server` (tokio-postgres's
    /// [`TlsConnect`](tokio_postgres::tls::TlsConnect)).
    pub fn for_postgres(&self, server: &str) -> PgTlsConnect {
        PgTlsConnect {
            tls: self.clone(),
            server: server.to_string(),
        }
    }
}

/// `server` as rustls verifies it: an IP address when it parses as one, else a DNS name.
fn server_name(server: &str) -> Result<ServerName<'static>, TlsError> {
    let bare = server
        .strip_prefix('[')
        .and_then(|s| s.strip_suffix(']'))
        .unwrap_or(server);
    ServerName::try_from(bare.to_string()).map_err(|_| TlsError::ServerName(server.to_string()))
}

/// The TLS side of one PostgreSQL session (see [`ClusterTls::for_postgres`]).
#[derive(Debug, Clone)]
pub struct PgTlsConnect {
    tls: ClusterTls,
    server: String,
}

impl<S> tokio_postgres::tls::TlsConnect<S> for PgTlsConnect
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = PgTlsStream<S>;
    type Error = TlsError;
    type Future = Pin<Box<dyn Future<Output = Result<PgTlsStream<S>, TlsError>> + Send>>;

    fn connect(self, stream: S) -> Self::Future {
        Box::pin(async move {
            let stream = self.tls.connect(stream, &self.server).await?;
            let end_point = stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|chain| chain.first())
                .and_then(|leaf| tls_server_end_point(leaf.as_ref()));
            Ok(PgTlsStream { stream, end_point })
        })
    }
}

/// A PostgreSQL session's TLS stream, with the channel binding data of its server certificate.
pub struct PgTlsStream<S> {
    stream: TlsStream<S>,
    end_point: Option<Vec<u8>>,
}

impl<S> tokio_postgres::tls::TlsStream for PgTlsStream<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    fn channel_binding(&self) -> tokio_postgres::tls::ChannelBinding {
        match &self.end_point {
            Some(hash) => tokio_postgres::tls::ChannelBinding::tls_server_end_point(hash.clone()),
            None => tokio_postgres::tls::ChannelBinding::none(),
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for PgTlsStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for PgTlsStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// RFC 5929's `tls-server-end-point` of a DER certificate: its hash with the hash function of
/// its signature algorithm (SHA-256 for MD5 and SHA-1). `None` for algorithms without one
/// (Ed25519): the session then authenticates with SCRAM-SHA-256 without channel binding, as
/// PostgreSQL itself does for such certificates.
fn tls_server_end_point(der: &[u8]) -> Option<Vec<u8>> {
    use x509_parser::oid_registry as oid;
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let alg = &cert.signature_algorithm.algorithm;
    let sha384 = [oid::OID_SIG_ECDSA_WITH_SHA384, oid::OID_PKCS1_SHA384WITHRSA];
    let sha512 = [oid::OID_SIG_ECDSA_WITH_SHA512, oid::OID_PKCS1_SHA512WITHRSA];
    let sha256_or_weaker = [
        oid::OID_SIG_ECDSA_WITH_SHA256,
        oid::OID_PKCS1_SHA256WITHRSA,
        oid::OID_PKCS1_SHA1WITHRSA,
        oid::OID_PKCS1_MD5WITHRSAENC,
    ];
    if sha384.contains(alg) {
        Some(Sha384::digest(der).to_vec())
    } else if sha512.contains(alg) {
        Some(Sha512::digest(der).to_vec())
    } else if sha256_or_weaker.contains(alg) {
        Some(Sha256::digest(der).to_vec())
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::{self, KeyAlgorithm, LeafRequest};
    use rustls::pki_types::PrivateKeyDer;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    fn ca() -> pki::Issued {
        named_ca("test-ca")
    }

    fn named_ca(name: &str) -> pki::Issued {
        pki::create_ca(name, 30).expect("ca")
    }

    fn leaf(ca: &pki::Issued, ip: &str) -> pki::Issued {
        pki::issue(
            &ca.cert_pem,
            &ca.key_pem,
            &LeafRequest {
                ca: "test-ca".into(),
                common_name: "pg1".into(),
                dns_names: vec!["pg1".into()],
                ip_addresses: vec![ip.into()],
                validity_secs: 3600,
                key_algorithm: KeyAlgorithm::EcdsaP256,
            },
        )
        .expect("leaf")
    }

    /// A TLS server on one end of an in-memory pipe that answers `pong` to anything; returns
    /// the other end.
    fn serve(cert: &pki::Issued) -> tokio::io::DuplexStream {
        let chain = CertificateDer::pem_slice_iter(cert.cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .expect("chain");
        let key = PrivateKeyDer::from_pem_slice(cert.key_pem.as_bytes()).expect("key");
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .expect("server config");
        let (client, server) = tokio::io::duplex(64 * 1024);
        tokio::spawn(async move {
            let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
            if let Ok(mut tls) = acceptor.accept(server).await {
                let mut buf = [0u8; 4];
                if tls.read_exact(&mut buf).await.is_ok() {
                    let _ = tls.write_all(b"pong").await;
                    let _ = tls.shutdown().await;
                }
            }
        });
        client
    }

    #[tokio::test]
    async fn the_server_is_verified_against_the_bundle_and_the_address_dialled() {
        let ca = ca();
        let cert = leaf(&ca, "10.0.0.5");
        let tls = ClusterTls::from_pem([ca.cert_pem.as_bytes()]).expect("bundle");

        let mut ok = tls
            .connect(serve(&cert), "10.0.0.5")
            .await
            .expect("verified");
        ok.write_all(b"ping").await.expect("write");
        let mut answer = [0u8; 4];
        ok.read_exact(&mut answer).await.expect("read");
        assert_eq!(&answer, b"pong");
        // The name on the certificate works too.
        assert!(tls.connect(serve(&cert), "pg1").await.is_ok());

        // Another address: the certificate does not name it.
        let e = tls
            .connect(serve(&cert), "10.0.0.6")
            .await
            .expect_err("wrong address");
        assert!(e.to_string().contains("10.0.0.6"), "{e}");
        // A bundle of another CA.
        let other =
            ClusterTls::from_pem([named_ca("other-ca").cert_pem.as_bytes()]).expect("bundle");
        let e = other
            .connect(serve(&cert), "10.0.0.5")
            .await
            .expect_err("foreign CA");
        assert!(e.to_string().contains("UnknownIssuer"), "{e}");
        // Another CA with the same name (what an impostor would make): its signature fails.
        let impostor =
            ClusterTls::from_pem([named_ca("test-ca").cert_pem.as_bytes()]).expect("bundle");
        let e = impostor
            .connect(serve(&cert), "10.0.0.5")
            .await
            .expect_err("impostor");
        assert!(e.to_string().contains("BadSignature"), "{e}");
        // During a rotation both CAs are trusted.
        let both = ClusterTls::from_pem([
            named_ca("next-ca").cert_pem.as_bytes(),
            ca.cert_pem.as_bytes(),
        ])
        .expect("bundle");
        assert!(both.connect(serve(&cert), "10.0.0.5").await.is_ok());
    }

    #[test]
    fn a_bundle_needs_a_certificate() {
        assert!(matches!(
            ClusterTls::from_pem([b"".as_slice()]),
            Err(TlsError::Empty)
        ));
        let junk = b"-----BEGIN CERTIFICATE-----\nnot base64 !\n-----END CERTIFICATE-----\n";
        assert!(ClusterTls::from_pem([junk.as_slice()]).is_err());
    }

    #[test]
    fn every_ca_of_the_bundles_is_trusted() {
        let (a, b) = (ca(), ca());
        let both = format!("{}{}", a.cert_pem, b.cert_pem);
        let tls = ClusterTls::from_pem([both.as_bytes()]).expect("bundle");
        assert_eq!(tls.anchors(), 2);
    }

    #[test]
    fn server_names_are_ip_addresses_or_dns_names() {
        assert!(matches!(
            server_name("10.0.0.5"),
            Ok(ServerName::IpAddress(_))
        ));
        assert!(matches!(server_name("[::1]"), Ok(ServerName::IpAddress(_))));
        assert!(matches!(server_name("pg1"), Ok(ServerName::DnsName(_))));
        assert!(server_name("bad name").is_err());
    }

    fn self_signed(alg: &'static rcgen::SignatureAlgorithm) -> Vec<u8> {
        let key = rcgen::KeyPair::generate_for(alg).expect("key");
        rcgen::CertificateParams::new(vec!["pg1".to_string()])
            .expect("params")
            .self_signed(&key)
            .expect("cert")
            .der()
            .to_vec()
    }

    #[test]
    fn the_end_point_hash_follows_the_signature_algorithm() {
        let der = self_signed(&rcgen::PKCS_ECDSA_P256_SHA256);
        assert_eq!(
            tls_server_end_point(&der),
            Some(Sha256::digest(&der).to_vec())
        );
        let der = self_signed(&rcgen::PKCS_ECDSA_P384_SHA384);
        assert_eq!(
            tls_server_end_point(&der),
            Some(Sha384::digest(&der).to_vec())
        );
        assert_eq!(
            tls_server_end_point(&self_signed(&rcgen::PKCS_ED25519)),
            None
        );
        assert_eq!(tls_server_end_point(b"not a certificate"), None);
    }
}
