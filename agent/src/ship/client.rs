//! `POST {URL}/v1/flows`: one batch per request, and what each answer means for the agent.
//!
//! | answer | the agent |
//! | --- | --- |
//! | 2xx | delivered (the service answers 2xx only once the batch is durable) |
//! | 401, 403 | keeps the batch and retries with backoff, reading the token file again (it may have rotated, or the service may be restarting with a new config) |
//! | 413 | splits the batch in two and sends the halves |
//! | 408, 429, 5xx, no answer, connection failure | keeps the batch and retries with backoff; 429 and 503 `Retry-After` is honoured |
//! | another 4xx | the service calls the batch malformed, which is the agent's bug: set aside, counted and logged with the service's message, never retried |
//! | 1xx, 3xx | a misconfigured URL: kept and retried, logged |
//!
//! HTTP/1.1 with keep-alive (hyper), TLS by rustls with the `ring` provider, trusting the system's
//! roots and `--ca-file`.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use flow_model::batch::{Encoding, CONTENT_TYPE};
use flow_model::BATCH_ID_HEADER;
use http::{header, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::rt::TokioExecutor;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

use super::backoff::parse_retry_after;
use super::spool::Batch;
use super::token::TokenFile;
use crate::metrics::DeliveryFailure;

/// How much of an error answer is kept for the log (the service names the first bad line).
const MESSAGE_MAX: usize = 1024;

/// What went wrong with `--recommender`, `--token-file` or `--ca-file`; found before start.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("--recommender {url}: {reason}")]
    Url { url: String, reason: String },
    #[error("--ca-file {path}: {reason}")]
    CaFile { path: String, reason: String },
    #[error(
        "--recommender {url}: no trusted CA certificates (the system has none readable); give --ca-file"
    )]
    NoRoots { url: String },
    #[error("TLS: {0}")]
    Tls(#[from] rustls::Error),
    #[error(transparent)]
    Token(#[from] super::token::TokenError),
}

/// The result of one attempt.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Delivered,
    /// Keep the batch and try again, not sooner than `after` if the service said so.
    Retry {
        reason: DeliveryFailure,
        after: Option<Duration>,
        detail: String,
    },
    /// 413: split and resend.
    TooLarge,
    /// Set aside: the service will never take this batch.
    Refused {
        status: u16,
        message: String,
    },
}

#[derive(Clone)]
pub struct Client {
    http: HyperClient<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>,
    endpoint: Uri,
    token: Arc<TokenFile>,
    timeout: Duration,
}

impl Client {
    /// Checks the URL, the token file and the CA file, and builds the client. `timeout` bounds each
    /// request from connect to the end of the answer.
    pub fn new(
        url: &str,
        token_file: &Path,
        ca_file: Option<&Path>,
        timeout: Duration,
    ) -> Result<Client, ConfigError> {
        let endpoint = endpoint(url)?;
        let token = Arc::new(TokenFile::new(token_file));
        token.header()?;
        let https = endpoint.scheme_str() == Some("https");
        let tls = tls_config(url, https, ca_file)?;
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(timeout.min(Duration::from_secs(10))));
        http.set_nodelay(true);
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let http = HyperClient::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(1)
            .build(connector);
        Ok(Client {
            http,
            endpoint,
            token,
            timeout,
        })
    }

    pub fn endpoint(&self) -> &Uri {
        &self.endpoint
    }

    /// Sends one batch and says what its answer means.
    pub async fn post(&self, batch: &Batch) -> Outcome {
        let auth = match self.token.header() {
            Ok(value) => value,
            Err(e) => {
                return Outcome::Retry {
                    reason: DeliveryFailure::Token,
                    after: None,
                    detail: e.to_string(),
                }
            }
        };
        let request = Request::post(self.endpoint.clone())
            .header(header::CONTENT_TYPE, CONTENT_TYPE)
            .header(
                header::CONTENT_ENCODING,
                Encoding::Gzip.header().unwrap_or("gzip"),
            )
            .header(header::AUTHORIZATION, auth)
            .header(BATCH_ID_HEADER, &batch.id)
            .body(Full::new(batch.body.clone()));
        let request = match request {
            Ok(r) => r,
            Err(e) => {
                // Only an id that is not a header value could do this; ids are checked when made.
                return Outcome::Refused {
                    status: 0,
                    message: format!("cannot build the request: {e}"),
                };
            }
        };
        let exchange = async {
            let response = self.http.request(request).await?;
            let status = response.status();
            let retry_after = response
                .headers()
                .get(header::RETRY_AFTER)
                .and_then(|v| parse_retry_after(v, jiff::Timestamp::now()));
            // Read (a bounded part of) the answer, which also lets the connection be reused.
            let message = match Limited::new(response.into_body(), MESSAGE_MAX)
                .collect()
                .await
            {
                Ok(body) => String::from_utf8_lossy(&body.to_bytes()).trim().to_owned(),
                Err(_) => String::new(),
            };
            Ok::<_, hyper_util::client::legacy::Error>((status, retry_after, message))
        };
        match tokio::time::timeout(self.timeout, exchange).await {
            Err(_) => Outcome::Retry {
                reason: DeliveryFailure::Timeout,
                after: None,
                detail: format!("no answer within {:?}", self.timeout),
            },
            Ok(Err(e)) => Outcome::Retry {
                reason: if e.is_connect() {
                    DeliveryFailure::Connect
                } else {
                    DeliveryFailure::Transport
                },
                after: None,
                detail: error_chain(&e),
            },
            Ok(Ok((status, retry_after, message))) => {
                let outcome = classify(status, retry_after, message);
                if matches!(
                    outcome,
                    Outcome::Retry {
                        reason: DeliveryFailure::Unauthorized | DeliveryFailure::Forbidden,
                        ..
                    }
                ) {
                    self.token.invalidate();
                }
                outcome
            }
        }
    }
}

/// What an answer means (the table in the module comment).
pub fn classify(status: StatusCode, retry_after: Option<Duration>, message: String) -> Outcome {
    let retry = |reason, after| Outcome::Retry {
        reason,
        after,
        detail: format!("{status}: {message}"),
    };
    match status.as_u16() {
        200..=299 => Outcome::Delivered,
        401 => retry(DeliveryFailure::Unauthorized, None),
        403 => retry(DeliveryFailure::Forbidden, None),
        413 => Outcome::TooLarge,
        408 => retry(DeliveryFailure::Timeout, None),
        429 => retry(DeliveryFailure::Throttled, retry_after),
        503 => retry(DeliveryFailure::Unavailable, retry_after),
        400..=499 => Outcome::Refused {
            status: status.as_u16(),
            message,
        },
        500..=599 => retry(DeliveryFailure::ServerError, None),
        _ => retry(DeliveryFailure::UnexpectedStatus, None),
    }
}

/// `{URL}/v1/flows`; the URL may carry a path prefix (a proxy's), not a query.
fn endpoint(url: &str) -> Result<Uri, ConfigError> {
    let bad = |reason: &str| ConfigError::Url {
        url: url.to_owned(),
        reason: reason.to_owned(),
    };
    let uri: Uri = url.parse().map_err(|e| bad(&format!("{e}")))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        _ => return Err(bad("must start with http:// or https://")),
    }
    let Some(authority) = uri.authority() else {
        return Err(bad("has no host"));
    };
    if uri.query().is_some() {
        return Err(bad("must not carry a query"));
    }
    let base = uri.path().trim_end_matches('/');
    format!(
        "{}://{}{base}/v1/flows",
        uri.scheme_str().unwrap_or("http"),
        authority
    )
    .parse()
    .map_err(|e| bad(&format!("{e}")))
}

/// rustls with `ring`: the system's roots (for https) and those of `--ca-file`.
fn tls_config(
    url: &str,
    https: bool,
    ca_file: Option<&Path>,
) -> Result<rustls::ClientConfig, ConfigError> {
    let mut roots = rustls::RootCertStore::empty();
    if https {
        let native = rustls_native_certs::load_native_certs();
        for error in &native.errors {
            tracing::debug!(%error, "a system CA certificate could not be read");
        }
        roots.add_parsable_certificates(native.certs);
    }
    if let Some(path) = ca_file {
        let bad = |reason: String| ConfigError::CaFile {
            path: path.display().to_string(),
            reason,
        };
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
            .map_err(|e| bad(e.to_string()))?
            .collect::<Result<_, _>>()
            .map_err(|e| bad(e.to_string()))?;
        if certs.is_empty() {
            return Err(bad("holds no PEM certificate".into()));
        }
        for cert in certs {
            roots.add(cert).map_err(|e| bad(e.to_string()))?;
        }
    }
    if https && roots.is_empty() {
        return Err(ConfigError::NoRoots {
            url: url.to_owned(),
        });
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// An error and its causes on one line (hyper's top-level message alone says little).
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        let e = |u: &str| endpoint(u).map(|u| u.to_string());
        assert_eq!(e("http://r:8080").unwrap(), "http://r:8080/v1/flows");
        assert_eq!(e("https://r/").unwrap(), "https://r/v1/flows");
        assert_eq!(
            e("https://proxy.example/egress/").unwrap(),
            "https://proxy.example/egress/v1/flows"
        );
        for bad in ["r:8080", "ftp://r", "http://r/?a=b", "http://", "not a url"] {
            assert!(e(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn statuses() {
        let c = |s: u16| classify(StatusCode::from_u16(s).unwrap(), None, "m".into());
        assert_eq!(c(200), Outcome::Delivered);
        assert_eq!(c(204), Outcome::Delivered);
        assert_eq!(c(413), Outcome::TooLarge);
        assert!(matches!(c(400), Outcome::Refused { status: 400, .. }));
        assert!(matches!(c(422), Outcome::Refused { status: 422, .. }));
        for (status, reason) in [
            (401, DeliveryFailure::Unauthorized),
            (403, DeliveryFailure::Forbidden),
            (408, DeliveryFailure::Timeout),
            (429, DeliveryFailure::Throttled),
            (500, DeliveryFailure::ServerError),
            (503, DeliveryFailure::Unavailable),
            (301, DeliveryFailure::UnexpectedStatus),
        ] {
            assert!(
                matches!(c(status), Outcome::Retry { reason: r, .. } if r == reason),
                "{status}"
            );
        }
        let wait = Some(Duration::from_secs(3));
        let o = classify(StatusCode::SERVICE_UNAVAILABLE, wait, String::new());
        assert!(matches!(o, Outcome::Retry { after, .. } if after == wait));
    }

    #[test]
    fn bad_configuration_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("token");
        std::fs::write(&token, "t").unwrap();
        let t = Duration::from_secs(1);
        let err = Client::new("http://r", &dir.path().join("none"), None, t)
            .err()
            .unwrap();
        assert!(err.to_string().contains("--token-file"), "{err}");
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, "not a certificate").unwrap();
        let err = Client::new("https://r", &token, Some(&ca), t)
            .err()
            .unwrap();
        assert!(err.to_string().contains("--ca-file"), "{err}");
        assert!(Client::new("http://r:1", &token, None, t).is_ok());
    }
}
