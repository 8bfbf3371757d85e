//! How aurum's servers take connections.
//!
//! HTTP, Arrow Flight and the Open Inference Protocol's gRPC service all
//! accept through [`incoming`]: a stream of connections that
//!
//! - holds at most [`Options::max_connections`] open at once (beyond it the
//!   accept loop waits for one to close, and new ones wait in the kernel's
//!   backlog, instead of the server running out of file descriptors or
//!   memory);
//! - speaks TLS (rustls) when given a certificate and key ([`Tls`]), each
//!   handshake on a task of its own bounded by
//!   [`Options::handshake_timeout`], so a client that stalls mid-handshake
//!   holds neither the accept loop nor a connection slot for long;
//! - closes a connection that sends nothing within the handshake timeout,
//!   and one that reads and writes nothing for [`Options::idle_timeout`];
//! - sets `TCP_NODELAY` (answers go out as soon as they are written).
//!
//! This crate knows nothing of HTTP or gRPC: reading a request (and the
//! header-read timeout) is the server's business.

mod conn;
mod tls;

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::Stream;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinHandle;

pub use conn::Conn;
pub use tls::{Error, Tls};

/// How connections are taken.
#[derive(Debug, Clone)]
pub struct Options {
    /// Connections open at once.
    pub max_connections: usize,
    /// The longest a new connection may take to send its first bytes, and a
    /// TLS handshake to complete; then it is closed without being served.
    pub handshake_timeout: Duration,
    /// The longest a connection may stay without reading or writing a
    /// byte; then its reads fail and the server closes it.
    pub idle_timeout: Duration,
    /// TLS, when the server has a certificate.
    pub tls: Option<Tls>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            max_connections: 4096,
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(300),
            tls: None,
        }
    }
}

/// The connections a listener takes, as a stream (what tonic's
/// `serve_with_incoming` and aurum's HTTP loop read). Dropping it stops
/// accepting and closes the listener.
pub struct Incoming {
    connections: mpsc::Receiver<Conn>,
    accept: JoinHandle<()>,
}

impl Drop for Incoming {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

impl Stream for Incoming {
    type Item = io::Result<Conn>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.connections.poll_recv(cx).map(|conn| conn.map(Ok))
    }
}

/// Takes `listener`'s connections as `options` say. Must be called inside a
/// tokio runtime (the accept loop is a task).
pub fn incoming(listener: TcpListener, options: Options) -> Incoming {
    // A small queue: connections are handed over as fast as the server
    // takes them; the cap is the semaphore, not this queue.
    let (sender, connections) = mpsc::channel(64);
    let accept = tokio::spawn(accept_loop(listener, options, sender));
    Incoming {
        connections,
        accept,
    }
}

async fn accept_loop(listener: TcpListener, options: Options, sender: mpsc::Sender<Conn>) {
    let cap = options.max_connections.clamp(1, Semaphore::MAX_PERMITS);
    let slots = Arc::new(Semaphore::new(cap));
    loop {
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                // The semaphore is never closed.
                Err(_) => return,
            },
            () = sender.closed() => return,
        };
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    on_accept_error(&error).await;
                    continue;
                }
            },
            () = sender.closed() => return,
        };
        let _ = tcp.set_nodelay(true);
        // Each connection is readied on a task of its own, so one that
        // stalls delays nobody else.
        let (sender, tls, options) = (sender.clone(), options.tls.clone(), options.clone());
        tokio::spawn(async move {
            let conn = match tls {
                None => first_bytes(tcp, options.handshake_timeout)
                    .await
                    .map(|tcp| Conn::plain(tcp, peer, slot, options.idle_timeout)),
                Some(tls) => handshake(tls, tcp, options.handshake_timeout)
                    .await
                    .map(|stream| Conn::tls(stream, peer, slot, options.idle_timeout)),
            };
            if let Some(conn) = conn {
                let _ = sender.send(conn).await;
            }
        });
    }
}

/// `tcp` once its client has sent something, or `None` (closed) if it
/// sends nothing within `timeout`: a silent connection never holds a slot
/// for longer.
async fn first_bytes(tcp: TcpStream, timeout: Duration) -> Option<TcpStream> {
    let mut byte = [0u8; 1];
    match tokio::time::timeout(timeout, tcp.peek(&mut byte)).await {
        Ok(Ok(n)) if n > 0 => Some(tcp),
        Ok(_) => None,
        Err(_) => {
            tracing::debug!(?timeout, "a connection sent nothing; closed");
            None
        }
    }
}

/// A failed handshake closes the connection (a client that does not speak
/// TLS, or one that stalls, is not the server's error).
async fn handshake(
    tls: Tls,
    tcp: TcpStream,
    timeout: Duration,
) -> Option<tokio_rustls::server::TlsStream<TcpStream>> {
    match tokio::time::timeout(timeout, tls.acceptor().accept(tcp)).await {
        Ok(Ok(stream)) => Some(stream),
        Ok(Err(error)) => {
            tracing::debug!(%error, "a TLS handshake failed");
            None
        }
        Err(_) => {
            tracing::debug!(?timeout, "a TLS handshake timed out");
            None
        }
    }
}

/// Errors of one accepted connection (reset before it was taken) are
/// skipped; others (out of file descriptors) pause the loop briefly instead
/// of spinning.
async fn on_accept_error(error: &io::Error) {
    use io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(
        error.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    ) {
        return;
    }
    tracing::warn!(%error, "accepting a connection failed; retrying shortly");
    tokio::time::sleep(Duration::from_millis(50)).await;
}

#[cfg(test)]
mod tests;
