//! A plain-HTTP transport for the S3 client that acknowledges every received segment at once
//! (`TCP_QUICKACK` before each read), so a server that does not set `TCP_NODELAY` (Garage)
//! does not stall ~40 ms per response on Nagle's algorithm meeting our delayed ACK.
//!
//! The SDK's own client already sets `TCP_NODELAY` on our side, which does not help: the
//! stalled write is the server's. Linux drops quick-ACK mode again after a request and a
//! response (it sees a ping-pong exchange), so the option is set before every read; one
//! `setsockopt` per read is cheap next to a 40 ms stall. https endpoints keep the SDK's client.

use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpClient,
    SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::HttpRequest;
use aws_smithy_runtime_api::client::result::ConnectorError;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_runtime_api::http::Response as SmithyResponse;
use aws_smithy_types::body::SdkBody;
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector as TcpConnector};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::net::TcpStream;
use tower_service::Service;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Builds the HTTP client (one connection pool, shared by all clones of the SDK client).
pub(crate) fn http_client(connect_timeout: Duration) -> SharedHttpClient {
    let mut tcp = TcpConnector::new();
    tcp.set_nodelay(true);
    tcp.set_connect_timeout(Some(connect_timeout));
    let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(60))
        .build(QuickAckConnector { tcp });
    SharedHttpClient::new(QuickAckClient {
        connector: SharedHttpConnector::new(QuickAckHttp { client }),
    })
}

#[derive(Debug, Clone)]
struct QuickAckClient {
    connector: SharedHttpConnector,
}

impl HttpClient for QuickAckClient {
    fn http_connector(
        &self,
        _settings: &HttpConnectorSettings,
        _components: &RuntimeComponents,
    ) -> SharedHttpConnector {
        self.connector.clone()
    }
}

#[derive(Debug, Clone)]
struct QuickAckHttp {
    client: hyper_util::client::legacy::Client<QuickAckConnector, SdkBody>,
}

impl HttpConnector for QuickAckHttp {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let request = match request.try_into_http1x() {
            Ok(r) => r,
            Err(e) => return HttpConnectorFuture::ready(Err(ConnectorError::user(e.into()))),
        };
        let client = self.client.clone();
        HttpConnectorFuture::new(async move {
            match client.request(request).await {
                Ok(resp) => SmithyResponse::try_from(resp.map(SdkBody::from_body_1_x))
                    .map_err(|e| ConnectorError::other(e.into(), None)),
                Err(e) => Err(connector_error(e)),
            }
        })
    }
}

/// Sorts a hyper client error the way the SDK's retry logic understands: timeouts, I/O
/// errors (connection refused, reset: retried), the rest.
fn connector_error(e: hyper_util::client::legacy::Error) -> ConnectorError {
    let mut src: Option<&(dyn std::error::Error + 'static)> = Some(&e);
    let mut timeout = false;
    let mut io = e.is_connect();
    while let Some(s) = src {
        if let Some(ioe) = s.downcast_ref::<std::io::Error>() {
            io = true;
            timeout |= ioe.kind() == std::io::ErrorKind::TimedOut;
        }
        src = s.source();
    }
    let boxed: BoxError = Box::new(e);
    if timeout {
        ConnectorError::timeout(boxed)
    } else if io {
        ConnectorError::io(boxed)
    } else {
        ConnectorError::other(boxed, None)
    }
}

/// hyper's TCP connector, with the stream wrapped in [`QuickAckIo`].
#[derive(Debug, Clone)]
struct QuickAckConnector {
    tcp: TcpConnector,
}

impl Service<http::Uri> for QuickAckConnector {
    type Response = QuickAckIo;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<QuickAckIo, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.tcp.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        if uri.scheme_str() != Some("http") {
            return Box::pin(async move {
                Err(format!("the loopback transport speaks plain http only, not {uri}").into())
            });
        }
        let fut = self.tcp.call(uri);
        Box::pin(async move {
            let io = fut.await?;
            Ok(QuickAckIo { io })
        })
    }
}

/// A TCP stream that turns on `TCP_QUICKACK` before each read.
#[derive(Debug)]
struct QuickAckIo {
    io: TokioIo<TcpStream>,
}

impl QuickAckIo {
    fn quickack(&self) {
        // A failure only means the ACK may be delayed again: nothing to report.
        let _ = socket2::SockRef::from(self.io.inner()).set_tcp_quickack(true);
    }
}

impl Connection for QuickAckIo {
    fn connected(&self) -> Connected {
        self.io.connected()
    }
}

impl hyper::rt::Read for QuickAckIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        self.quickack();
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl hyper::rt::Write for QuickAckIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }
}
