use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::*;

struct Pair {
    _dir: tempfile::TempDir,
    certificate: std::path::PathBuf,
    key: std::path::PathBuf,
    der: CertificateDer<'static>,
}

fn self_signed() -> Pair {
    let made = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let certificate = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    std::fs::write(&certificate, made.cert.pem()).unwrap();
    std::fs::write(&key, made.signing_key.serialize_pem()).unwrap();
    Pair {
        _dir: dir,
        certificate,
        key,
        der: made.cert.der().clone(),
    }
}

async fn listening(options: Options) -> (Incoming, std::net::SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    (incoming(listener, options), address)
}

async fn tls_client(
    der: &CertificateDer<'static>,
    address: std::net::SocketAddr,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(der.clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(address).await?;
    connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
}

#[tokio::test]
async fn connections_beyond_the_cap_wait_for_one_to_close() {
    let options = Options {
        max_connections: 2,
        ..Options::default()
    };
    let (mut incoming, address) = listening(options).await;
    let mut clients = Vec::new();
    for _ in 0..3 {
        let mut client = TcpStream::connect(address).await.unwrap();
        client.write_all(b"x").await.unwrap();
        clients.push(client);
    }
    let first = incoming.next().await.unwrap().unwrap();
    let _second = incoming.next().await.unwrap().unwrap();
    let third = tokio::time::timeout(Duration::from_millis(300), incoming.next()).await;
    assert!(third.is_err(), "a third connection was taken over the cap");
    drop(first);
    let third = tokio::time::timeout(Duration::from_secs(5), incoming.next())
        .await
        .expect("a slot was freed")
        .unwrap()
        .unwrap();
    assert!(!third.is_tls());
}

#[tokio::test]
async fn tls_connections_carry_data_and_stalled_handshakes_are_cut() {
    let pair = self_signed();
    let options = Options {
        max_connections: 1,
        handshake_timeout: Duration::from_millis(300),
        tls: Some(Tls::from_pem_files(&pair.certificate, &pair.key).unwrap()),
        ..Options::default()
    };
    let (mut incoming, address) = listening(options).await;

    // A client that connects and says nothing holds the only slot until its
    // handshake times out, and is then closed.
    let mut stalled = TcpStream::connect(address).await.unwrap();
    let mut byte = [0u8; 1];
    let read = tokio::time::timeout(Duration::from_secs(5), stalled.read(&mut byte))
        .await
        .expect("the stalled handshake was cut");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");

    // A client that speaks plain HTTP to a TLS port is closed too.
    let mut plain = TcpStream::connect(address).await.unwrap();
    plain
        .write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), plain.read_to_end(&mut answer)).await;
    assert!(!answer.starts_with(b"HTTP"), "{answer:?}");

    let (client, server) = tokio::join!(tls_client(&pair.der, address), incoming.next());
    let mut client = client.unwrap();
    let mut server = server.unwrap().unwrap();
    assert!(server.is_tls());
    client.write_all(b"ping").await.unwrap();
    client.flush().await.unwrap();
    let mut got = [0u8; 4];
    server.read_exact(&mut got).await.unwrap();
    assert_eq!(&got, b"ping");
}

#[test]
fn bad_certificates_and_keys_are_named() {
    let pair = self_signed();
    let other = self_signed();
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not a certificate").unwrap();
    let missing = dir.path().join("missing.pem");

    let error = Tls::from_pem_files(&missing, &pair.key).unwrap_err();
    assert!(
        matches!(
            error,
            Error::Read {
                what: "certificate",
                ..
            }
        ),
        "{error}"
    );
    assert!(error.to_string().contains("missing.pem"), "{error}");
    let error = Tls::from_pem_files(&garbage, &pair.key).unwrap_err();
    assert!(matches!(error, Error::NoCertificate { .. }), "{error}");
    let error = Tls::from_pem_files(&pair.certificate, &garbage).unwrap_err();
    assert!(matches!(error, Error::Pem { what: "key", .. }), "{error}");
    let error = Tls::from_pem_files(&pair.certificate, &other.key).unwrap_err();
    assert!(matches!(error, Error::Config { .. }), "{error}");
    // The key's contents never appear.
    let key = std::fs::read_to_string(&other.key).unwrap();
    let body = key.lines().nth(1).unwrap();
    assert!(!error.to_string().contains(body), "{error}");
}

#[tokio::test]
async fn silent_and_idle_connections_are_closed() {
    let options = Options {
        max_connections: 1,
        handshake_timeout: Duration::from_millis(200),
        idle_timeout: Duration::from_millis(300),
        tls: None,
    };
    let (mut incoming, address) = listening(options).await;
    // Says nothing: closed without being handed to the server, and its
    // slot freed for the next one.
    let mut silent = TcpStream::connect(address).await.unwrap();
    let mut byte = [0u8; 1];
    let read = tokio::time::timeout(Duration::from_secs(5), silent.read(&mut byte))
        .await
        .expect("the silent connection was closed");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");

    let mut client = TcpStream::connect(address).await.unwrap();
    client.write_all(b"ping").await.unwrap();
    let mut server = tokio::time::timeout(Duration::from_secs(5), incoming.next())
        .await
        .expect("a connection that spoke was taken")
        .unwrap()
        .unwrap();
    let mut got = [0u8; 4];
    server.read_exact(&mut got).await.unwrap();
    // Activity keeps it open past the idle limit...
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        client.write_all(b"k").await.unwrap();
        server.read_exact(&mut byte).await.unwrap();
    }
    // ...silence ends it: the server's next read fails.
    let idle = tokio::time::timeout(Duration::from_secs(5), server.read(&mut byte))
        .await
        .expect("the idle read ended");
    let error = idle.unwrap_err();
    assert_eq!(error.kind(), std::io::ErrorKind::TimedOut);
}
