//! The client side of `export --server` and `status --server`: one authenticated GET.
//! Plain HTTP (the service listens on plain HTTP; put TLS in front of it where the network is
//! not trusted).

use std::time::Duration;

use bytes::Bytes;
use http::{header, Request, Uri};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// Why a request to the service failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("--server {url}: {reason}")]
    Url { url: String, reason: String },
    #[error("--server {url}: {reason}")]
    Request { url: String, reason: String },
    #[error("--server {url}: HTTP {status}: {message}")]
    Status {
        url: String,
        status: u16,
        message: String,
    },
}

/// `GET {server}{path}` with the bearer `token`; the body of a 2xx answer.
pub async fn get(server: &str, path: &str, token: &str) -> Result<String, ClientError> {
    let url = format!("{}{path}", server.trim_end_matches('/'));
    let uri: Uri = url.parse().map_err(|e| ClientError::Url {
        url: server.to_owned(),
        reason: format!("not a URL: {e}"),
    })?;
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => {
            return Err(ClientError::Url {
                url: server.to_owned(),
                reason: "https is not supported by this client; reach the service over http (e.g. kubectl port-forward)".into(),
            })
        }
        _ => {
            return Err(ClientError::Url {
                url: server.to_owned(),
                reason: "expected http://HOST:PORT".into(),
            })
        }
    }
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let request = Request::get(uri)
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .body(Empty::new())
        .map_err(|e| ClientError::Url {
            url: server.to_owned(),
            reason: e.to_string(),
        })?;
    let failed = |reason: String| ClientError::Request {
        url: server.to_owned(),
        reason,
    };
    let exchange = async {
        let response = client
            .request(request)
            .await
            .map_err(|e| failed(error_chain(&e)))?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| failed(e.to_string()))?
            .to_bytes();
        Ok::<_, ClientError>((status, String::from_utf8_lossy(&body).into_owned()))
    };
    let (status, body) = tokio::time::timeout(Duration::from_secs(300), exchange)
        .await
        .map_err(|_| failed("no answer within 300 s".into()))??;
    if !status.is_success() {
        let message = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v.get("error")?.as_str().map(str::to_owned))
            .unwrap_or_else(|| body.trim().to_owned());
        return Err(ClientError::Status {
            url: server.to_owned(),
            status: status.as_u16(),
            message,
        });
    }
    Ok(body)
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}
