//! A minimal HTTP/1.1 client over hyper's connection API (hyper is already in the tree for
//! the admin API's server): one connection per request, plain HTTP, bodies bounded. It
//! serves etcd's JSON gateway and the gateway's shipping of access logs and change events
//! to ingest nodes — peers on a private network, where reqwest's pools, TLS, proxies and
//! redirects would add ~200 crates to the gateway for nothing.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;

/// Largest response body read whole.
pub const MAX_BODY: usize = 64 << 20;

/// Errors of the client.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("bad url `{0}`: expected http://HOST:PORT/PATH")]
    Url(String),
    #[error("connect {0}: {1}")]
    Connect(String, #[source] std::io::Error),
    #[error("http: {0}")]
    Http(String),
    #[error("timed out after {0:?}")]
    Timeout(Duration),
}

/// `http://host:port/path?q` → (`host:port`, `/path?q`).
pub fn split_url(url: &str) -> Result<(String, String), HttpError> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| HttpError::Url(url.into()))?;
    let (auth, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if auth.is_empty() {
        return Err(HttpError::Url(url.into()));
    }
    let auth = if auth.contains(':') {
        auth.to_string()
    } else {
        format!("{auth}:80")
    };
    Ok((auth, path.to_string()))
}

/// Send one request and return the response with its body unread (for streams).
pub async fn send(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Bytes,
) -> Result<hyper::Response<Incoming>, HttpError> {
    let (auth, path) = split_url(url)?;
    let stream = tokio::net::TcpStream::connect(&auth)
        .await
        .map_err(|e| HttpError::Connect(auth.clone(), e))?;
    let _ = stream.set_nodelay(true);
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| HttpError::Http(e.to_string()))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let mut req = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", &auth);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req
        .body(Full::new(body))
        .map_err(|e| HttpError::Http(e.to_string()))?;
    sender
        .send_request(req)
        .await
        .map_err(|e| HttpError::Http(e.to_string()))
}

/// POST `body` with `content_type`; the status and the whole answer, within `timeout`.
pub async fn post(
    url: &str,
    content_type: &str,
    body: Bytes,
    timeout: Duration,
) -> Result<(u16, Bytes), HttpError> {
    post_with(url, &[("content-type", content_type)], body, timeout).await
}

/// [`post`] with any headers (content type, authorization).
pub async fn post_with(
    url: &str,
    headers: &[(&str, &str)],
    body: Bytes,
    timeout: Duration,
) -> Result<(u16, Bytes), HttpError> {
    let call = async {
        let resp = send("POST", url, headers, body).await?;
        let status = resp.status().as_u16();
        let body = Limited::new(resp.into_body(), MAX_BODY)
            .collect()
            .await
            .map_err(|e| HttpError::Http(e.to_string()))?
            .to_bytes();
        Ok((status, body))
    };
    tokio::time::timeout(timeout, call)
        .await
        .map_err(|_| HttpError::Timeout(timeout))?
}

/// The next data chunk of a streamed body (`None` at its end).
pub async fn next_chunk(body: &mut Incoming) -> Result<Option<Bytes>, HttpError> {
    loop {
        match body.frame().await {
            None => return Ok(None),
            Some(Err(e)) => return Err(HttpError::Http(e.to_string())),
            Some(Ok(f)) => {
                if let Ok(data) = f.into_data() {
                    return Ok(Some(data));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            split_url("http://127.0.0.1:2379/v3/kv/range").unwrap(),
            ("127.0.0.1:2379".into(), "/v3/kv/range".into())
        );
        assert_eq!(
            split_url("http://etcd").unwrap(),
            ("etcd:80".into(), "/".into())
        );
        assert!(split_url("https://x/").is_err());
        assert!(split_url("http:///x").is_err());
    }
}
