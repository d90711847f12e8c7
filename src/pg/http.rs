//! One HTTP/1.1 request over a tunnel (hyper's client connection on the tunnel stream, in TLS
//! verified against the cluster's CA when the service speaks HTTPS), for Patroni's REST API
//! and etcd's health endpoint on a member.
//!
//! One tunnel per request: Patroni's REST server (Python's `http.server`) answers HTTP/1.0 and
//! closes the connection after each response, so there is nothing to keep alive. Every request
//! is bounded as a whole (tunnel, request, response body), and the body is bounded in size.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HOST, HeaderValue};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::timeout;

use super::Credentials;
use super::tls::{ClusterTls, TlsError};
use crate::transport::{Connection, Destination, TunnelError};

/// Largest response body read (Patroni's `/cluster` of a big cluster is a few kB).
pub const MAX_BODY: usize = 4 * 1024 * 1024;

/// An HTTP request to send.
#[derive(Debug, Clone)]
pub struct HttpRequest<'a> {
    /// Method.
    pub method: Method,
    /// Path and query, e.g. `/config`.
    pub path: &'a str,
    /// A JSON body, if any.
    pub json: Option<Vec<u8>>,
    /// Basic authentication (the header is marked sensitive, so hyper never logs it).
    pub auth: Option<&'a Credentials>,
}

/// The answer.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    /// Status code.
    pub status: u16,
    /// Body, at most [`MAX_BODY`] bytes.
    pub body: Bytes,
}

impl HttpResponse {
    /// The body as text (lossy), cut to `limit` characters for error messages.
    pub fn body_excerpt(&self, limit: usize) -> String {
        let text = String::from_utf8_lossy(&self.body);
        let text = text.trim();
        match text.char_indices().nth(limit) {
            Some((cut, _)) => format!("{}...", &text[..cut]),
            None => text.to_string(),
        }
    }
}

/// Why a request got no answer. The caller adds which member and endpoint.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HttpError {
    /// The tunnel could not be opened (boxed: it is large).
    #[error(transparent)]
    Tunnel(Box<TunnelError>),
    /// The TLS handshake failed (the server's certificate did not verify, or it does not speak
    /// TLS).
    #[error(transparent)]
    Tls(TlsError),
    /// The request could not be built (a path with bytes HTTP does not allow).
    #[error("invalid request: {0}")]
    Request(#[source] hyper::http::Error),
    /// HTTP failed (connection closed early, malformed response).
    #[error("HTTP: {0}")]
    Http(#[source] hyper::Error),
    /// The body was larger than [`MAX_BODY`] or could not be read.
    #[error("reading the response body: {0}")]
    Body(String),
    /// The whole exchange took longer than allowed.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

/// Sends `request` to `destination` through a new tunnel of `conn` and reads the response,
/// all within `within`. `host` is the `Host` header (the address the service listens on).
/// With `tls`, the request goes over HTTPS: the server's certificate must chain to the bundle
/// and name the destination's host.
pub async fn request(
    conn: &Connection,
    destination: &Destination,
    host: &str,
    tls: Option<&ClusterTls>,
    request: HttpRequest<'_>,
    within: Duration,
) -> Result<HttpResponse, HttpError> {
    let exchange = async {
        let tunnel = conn
            .tunnel(destination, within)
            .await
            .map_err(|e| HttpError::Tunnel(Box::new(e)))?;
        match tls {
            None => send(tunnel, host, request).await,
            Some(tls) => {
                let server = match destination {
                    Destination::Tcp { host, .. } => host.as_str(),
                    Destination::Unix { .. } => "localhost",
                };
                let stream = tls.connect(tunnel, server).await.map_err(HttpError::Tls)?;
                send(stream, host, request).await
            }
        }
    };
    timeout(within, exchange)
        .await
        .map_err(|_| HttpError::Timeout(within))?
}

/// Sends `request` over an open stream and reads the response (unbounded in time: the caller
/// bounds it).
pub async fn send<S>(
    stream: S,
    host: &str,
    request: HttpRequest<'_>,
) -> Result<HttpResponse, HttpError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(HttpError::Http)?;
    // The connection future drives the socket; it ends when the response is read (the server
    // closes) or when we drop the sender. Aborted on every path out of here.
    let driver = tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "HTTP connection over tunnel ended");
        }
    });
    let _abort = AbortOnDrop(driver);

    let mut builder = Request::builder()
        .method(request.method)
        .uri(request.path)
        .header(HOST, host)
        .header(ACCEPT, "application/json");
    if let Some(auth) = request.auth {
        builder = builder.header(AUTHORIZATION, basic_auth(auth));
    }
    let body = match request.json {
        Some(json) => {
            builder = builder.header(CONTENT_TYPE, "application/json");
            Full::new(Bytes::from(json))
        }
        None => Full::new(Bytes::new()),
    };
    let req = builder.body(body).map_err(HttpError::Request)?;
    let response = sender.send_request(req).await.map_err(HttpError::Http)?;
    let status = response.status().as_u16();
    let body = Limited::new(response.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|e| HttpError::Body(e.to_string()))?
        .to_bytes();
    Ok(HttpResponse { status, body })
}

/// `Basic base64(user:password)`, marked sensitive.
fn basic_auth(credentials: &Credentials) -> HeaderValue {
    let token = STANDARD.encode(format!(
        "{}:{}",
        credentials.user,
        credentials.password.expose()
    ));
    // Base64 is always a valid header value; the fallback keeps this infallible anyway.
    let mut value = HeaderValue::from_str(&format!("Basic {token}"))
        .unwrap_or_else(|_| HeaderValue::from_static("Basic"));
    value.set_sensitive(true);
    value
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pg::Password;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    /// A one-shot HTTP/1.0 server on an in-memory pipe, answering like Patroni does.
    async fn serve_once(
        answer: &'static [u8],
    ) -> (tokio::io::DuplexStream, tokio::task::JoinHandle<String>) {
        let (client, mut server) = tokio::io::duplex(64 * 1024);
        let task = tokio::spawn(async move {
            let mut seen = Vec::new();
            let mut buf = [0u8; 4096];
            loop {
                let n = server.read(&mut buf).await.unwrap_or(0);
                if n == 0 {
                    break;
                }
                seen.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&seen);
                if let Some(head_end) = text.find("\r\n\r\n") {
                    let length = text[..head_end]
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                        })
                        .unwrap_or(0);
                    if seen.len() >= head_end + 4 + length {
                        break;
                    }
                }
            }
            server.write_all(answer).await.unwrap();
            server.shutdown().await.unwrap();
            String::from_utf8_lossy(&seen).into_owned()
        });
        (client, task)
    }

    #[tokio::test]
    async fn sends_basic_auth_and_json_and_reads_an_http10_answer() {
        let (stream, server) =
            serve_once(b"HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n{\"ttl\": 30}")
                .await;
        let creds = Credentials::new("patroni", Password::new("s3cret"));
        let response = send(
            stream,
            "10.0.0.5:8008",
            HttpRequest {
                method: Method::PATCH,
                path: "/config",
                json: Some(br#"{"ttl":20}"#.to_vec()),
                auth: Some(&creds),
            },
        )
        .await
        .expect("request");
        assert_eq!(response.status, 200);
        assert_eq!(&response.body[..], br#"{"ttl": 30}"#);
        let seen = server.await.unwrap();
        assert!(seen.starts_with("PATCH /config HTTP/1.1\r\n"), "{seen}");
        // base64("patroni:s3cret")
        assert!(
            seen.contains("authorization: Basic cGF0cm9uaTpzM2NyZXQ="),
            "{seen}"
        );
        assert!(seen.contains("host: 10.0.0.5:8008"), "{seen}");
        assert!(seen.ends_with(r#"{"ttl":20}"#), "{seen}");
    }

    #[tokio::test]
    async fn an_oversized_body_is_an_error() {
        let mut answer = b"HTTP/1.0 200 OK\r\n\r\n".to_vec();
        answer.extend(std::iter::repeat_n(b'x', MAX_BODY + 10));
        let answer: &'static [u8] = Box::leak(answer.into_boxed_slice());
        let (stream, _server) = serve_once(answer).await;
        let err = send(
            stream,
            "h",
            HttpRequest {
                method: Method::GET,
                path: "/cluster",
                json: None,
                auth: None,
            },
        )
        .await
        .expect_err("too large");
        assert!(matches!(err, HttpError::Body(_)), "{err:?}");
    }

    #[test]
    fn excerpts_are_cut() {
        let r = HttpResponse {
            status: 503,
            body: Bytes::from_static(b"  restart conditions are not satisfied  "),
        };
        assert_eq!(r.body_excerpt(7), "restart...");
        assert_eq!(r.body_excerpt(100), "restart conditions are not satisfied");
    }
}
