//! A closed-loop HTTP/1.1 load generator for the bench binaries (included
//! with `#[path]`): keep-alive connections over raw TCP on loopback, on one
//! thread, each sending its next request when the previous answer is read
//! (as wrk does). Latency is measured per request from write to the end of
//! the answer.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Prints the percentiles of `nanos` (in µs).
pub fn percentiles(label: &str, mut nanos: Vec<u64>) {
    nanos.sort_unstable();
    let at = |q: f64| {
        let i = ((nanos.len() as f64 * q).ceil() as usize).clamp(1, nanos.len()) - 1;
        nanos[i] as f64 / 1000.0
    };
    println!(
        "{label}: n={} p50={:.2} µs p90={:.2} µs p99={:.2} µs p99.9={:.2} µs max={:.2} µs",
        nanos.len(),
        at(0.5),
        at(0.9),
        at(0.99),
        at(0.999),
        at(1.0)
    );
}

/// An HTTP/1.1 POST of a JSON `body` to `path`.
pub fn post_request(host: &str, path: &str, body: &str) -> Vec<u8> {
    post_request_with(host, path, "", body)
}

/// [`post_request`] with more header lines (each ending in `\r\n`).
pub fn post_request_with(host: &str, path: &str, headers: &str, body: &str) -> Vec<u8> {
    format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n\
         {headers}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// The non-blank lines of `file`: one request body each.
pub fn body_lines(file: &str) -> Result<Vec<String>> {
    Ok(std::fs::read_to_string(file)?
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_string)
        .collect())
}

/// Loads any server: one POST of each body (from `bodies`, read once the
/// URL is known to be usable), cycled, to `url` (`http://ip:port/path`)
/// over `connections` for `seconds`; prints the report.
pub fn load_url(
    url: &str,
    bodies: impl FnOnce() -> Result<Vec<String>>,
    connections: usize,
    seconds: u64,
) -> Result<()> {
    let rest = url
        .strip_prefix("http://")
        .context("load needs an http:// URL")?;
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    let addr = host
        .parse::<std::net::SocketAddr>()
        .context("the URL host must be ip:port")?;
    let requests: Vec<Vec<u8>> = bodies()?
        .iter()
        .map(|b| post_request(host, &format!("/{path}"), b))
        .collect();
    let report = run_load(addr, requests, connections, seconds)?;
    report.print(&format!("{url}, {connections} connections"));
    Ok(())
}

/// What a closed-loop load measured.
pub struct LoadReport {
    /// Requests answered after the warm-up.
    pub requests: usize,
    /// Answers other than 200.
    pub errors: usize,
    /// The measured time.
    pub seconds: f64,
    /// Per-request latencies.
    pub nanos: Vec<u64>,
}
impl LoadReport {
    /// Prints throughput and latency percentiles.
    pub fn print(self, label: &str) {
        println!(
            "{label}: {:.0} requests/s over {:.1} s ({} requests, {} non-200)",
            self.requests as f64 / self.seconds,
            self.seconds,
            self.requests,
            self.errors
        );
        percentiles("  latency", self.nanos);
    }
}

/// Runs a closed-loop load of `requests` (cycled) over `connections`
/// keep-alive connections for `seconds` after a 2-second warm-up, on one
/// thread.
pub fn run_load(
    addr: std::net::SocketAddr,
    requests: Vec<Vec<u8>>,
    connections: usize,
    seconds: u64,
) -> Result<LoadReport> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let requests = Arc::new(requests);
    runtime.block_on(async move {
        let warmup = Instant::now() + Duration::from_secs(2);
        let end = warmup + Duration::from_secs(seconds);
        let mut tasks = Vec::new();
        for c in 0..connections {
            let requests = requests.clone();
            tasks.push(tokio::spawn(async move {
                let mut stream = tokio::net::TcpStream::connect(addr).await?;
                stream.set_nodelay(true)?;
                let mut buffer = Vec::with_capacity(64 << 10);
                let mut nanos = Vec::new();
                let (mut done, mut errors) = (0usize, 0usize);
                let mut i = c;
                loop {
                    let started = Instant::now();
                    if started >= end {
                        break;
                    }
                    stream.write_all(&requests[i % requests.len()]).await?;
                    let status = read_response(&mut stream, &mut buffer).await?;
                    if started >= warmup {
                        nanos.push(started.elapsed().as_nanos() as u64);
                        done += 1;
                        errors += usize::from(status != 200);
                    }
                    i += connections;
                }
                anyhow::Ok((done, errors, nanos))
            }));
        }
        let mut report = LoadReport {
            requests: 0,
            errors: 0,
            seconds: seconds as f64,
            nanos: Vec::new(),
        };
        for task in tasks {
            let (done, errors, nanos) = task.await??;
            report.requests += done;
            report.errors += errors;
            report.nanos.extend(nanos);
        }
        Ok(report)
    })
}

/// Reads one HTTP/1.1 response (Content-Length or chunked body) and
/// returns its status.
pub async fn read_response(
    stream: &mut tokio::net::TcpStream,
    buffer: &mut Vec<u8>,
) -> Result<u16> {
    buffer.clear();
    let header_end = loop {
        if let Some(end) = find(buffer, b"\r\n\r\n") {
            break end + 4;
        }
        read_more(stream, buffer).await?;
    };
    let head = std::str::from_utf8(&buffer[..header_end]).context("response head")?;
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("response status")?;
    let header = |name: &str| {
        head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
        })
    };
    if let Some(length) = header("content-length") {
        let length: usize = length.parse()?;
        while buffer.len() < header_end + length {
            read_more(stream, buffer).await?;
        }
    } else if header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        let mut at = header_end;
        loop {
            let line_end = loop {
                if let Some(end) = find(&buffer[at..], b"\r\n") {
                    break at + end;
                }
                read_more(stream, buffer).await?;
            };
            let size = usize::from_str_radix(
                std::str::from_utf8(&buffer[at..line_end])?
                    .split(';')
                    .next()
                    .unwrap_or("0")
                    .trim(),
                16,
            )?;
            let next = line_end + 2 + size + 2;
            while buffer.len() < next {
                read_more(stream, buffer).await?;
            }
            at = next;
            if size == 0 {
                break;
            }
        }
    }
    Ok(status)
}

async fn read_more(stream: &mut tokio::net::TcpStream, buffer: &mut Vec<u8>) -> Result<()> {
    let mut chunk = [0u8; 16 << 10];
    let n = stream.read(&mut chunk).await?;
    if n == 0 {
        bail!("the server closed the connection");
    }
    buffer.extend_from_slice(&chunk[..n]);
    Ok(())
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
