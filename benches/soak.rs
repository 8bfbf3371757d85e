//! A soak of the real `aurum serve` (issue 21): full closed-loop load for
//! `--seconds` (600) with bad requests mixed in, on an example project with
//! tokens. Reports the server's resident memory after the warm-up and at
//! the end, the answers by status, the server errors `/metrics` counted
//! and the panics in its log.
//!
//! The mix, per 100 requests: 55 `/predict` and 20 `/get-online-features`
//! (read token), 5 pushes to the online store (write token; two carry an
//! idempotency key from a rotating set of 1,000, so most of those are
//! replays; the example view serves stored rows, `windows_at = "event"`,
//! so that it accepts pushes) and 20 bad ones:
//! malformed JSON, a wrong content type, no token, a read token on a write
//! route, a 2 KiB entity key, an unknown model, a body over the 8 MiB limit
//! (1 in 100), and bytes that are not HTTP. Beside the load, a client opens a
//! connection every second and never finishes its headers (the server cuts
//! it after `--header-read-timeout-secs 5`).
//!
//! usage: cargo bench --profile dev --bench soak -- [--seconds N] [--connections N]
//!        [--feedback-memory N] [--no-oversize] [--serve-arg ARG]… [--wrap COMMAND]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tokio::io::AsyncWriteExt;

#[path = "common/load.rs"]
mod load;

fn main() -> Result<()> {
    let mut seconds = 600u64;
    let mut connections = 16usize;
    let mut serve_args: Vec<String> = Vec::new();
    let mut oversize = true;
    let mut wrapper: Vec<String> = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--seconds" => seconds = args.next().context("--seconds N")?.parse()?,
            "--connections" => connections = args.next().context("--connections N")?.parse()?,
            // The server's --feedback-memory (predictions remembered for
            // /feedback), to tell that bound's filling from a leak.
            "--feedback-memory" => {
                serve_args.push("--feedback-memory".into());
                serve_args.push(args.next().context("--feedback-memory N")?);
            }
            // Any other argument for `aurum serve` (e.g. `--serve-arg
            // --drift-window-rows --serve-arg 100`), to try what a bound
            // does to memory.
            "--serve-arg" => serve_args.push(args.next().context("--serve-arg ARG")?),
            // Sends a second unknown-model request in place of the 9 MiB
            // body, to tell the allocator's retained pages from growth.
            "--no-oversize" => oversize = false,
            // Runs the server under a tool, e.g. `--wrap "heaptrack -o
            // /tmp/serve"` (build with `--features system-allocator` so
            // the tool sees the allocations). Memory figures are then the
            // tool's process's, not the server's.
            "--wrap" => {
                wrapper = args
                    .next()
                    .context("--wrap COMMAND")?
                    .split_whitespace()
                    .map(str::to_string)
                    .collect();
            }
            // cargo bench passes --bench.
            _ => {}
        }
    }
    let project = tempfile::tempdir()?;
    let dir = project.path();
    eprintln!("making the example project (generate, pipeline, train)...");
    for step in [
        &["init", "."][..],
        &["generate", "--rows", "50000", "--seed", "7"],
        &["pipeline"],
        &["train"],
    ] {
        aurum(dir, step)?;
        if step[0] == "init" {
            // The example view values its windows at the read, and such a
            // view refuses pushed rows; the soak pushes, so it serves
            // rows as stored.
            let toml = dir.join("aurum.toml");
            let text = std::fs::read_to_string(&toml)?;
            if !text.contains("windows_at = \"request\"") {
                bail!("the example project no longer declares windows_at = \"request\"");
            }
            std::fs::write(
                &toml,
                text.replace("windows_at = \"request\"", "windows_at = \"event\""),
            )?;
        }
    }
    let read = aurum(dir, &["token", "new", "soak-read", "--role", "read"])?;
    let write = aurum(dir, &["token", "new", "soak-write", "--role", "write"])?;
    let log = dir.join("serve.log");
    let mut server = match wrapper.split_first() {
        Some((tool, tool_args)) => {
            let mut command = Command::new(tool);
            command.args(tool_args).arg(env!("CARGO_BIN_EXE_aurum"));
            command
        }
        None => Command::new(env!("CARGO_BIN_EXE_aurum")),
    };
    let mut server = server
        .args([
            "serve",
            "--addr",
            "127.0.0.1:0",
            "--flight-addr",
            "127.0.0.1:0",
            "--grpc-addr",
            "127.0.0.1:0",
            "--tokens",
            "tokens.toml",
            "--header-read-timeout-secs",
            "5",
        ])
        .args(&serve_args)
        .current_dir(dir)
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log)?)
        .spawn()?;
    let pid = server.id();
    let mut address = None;
    for line in BufReader::new(server.stdout.take().context("stdout")?).lines() {
        let line = line?;
        if let Some(url) = line.strip_prefix("listening on http://") {
            address = Some(url.parse::<SocketAddr>()?);
        }
        if line == "ready" {
            break;
        }
    }
    let address = address.context("the server printed no address")?;
    let result = soak(address, pid, &read, &write, connections, seconds, oversize);
    let metrics = scrape(address);
    let _ = server.kill();
    let _ = server.wait();
    let report = result?;
    let metrics = metrics?;
    let server_errors = server_errors(&metrics);
    // What the bounded queues held at the end (they explain memory).
    for line in metrics
        .lines()
        .filter(|l| l.starts_with("aurum_prediction_log_") || l.starts_with("aurum_online_entries"))
    {
        println!("  /metrics: {line}");
    }
    let log = std::fs::read_to_string(&log).unwrap_or_default();
    let panics = log.matches("panicked").count();
    // Warnings and errors the server logged, each distinct message once
    // (the log is JSON or text; the bad requests themselves log nothing
    // above INFO).
    let mut warnings: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("WARN") || l.contains("ERROR"))
        .collect();
    let logged = warnings.len();
    warnings.sort_unstable();
    warnings.dedup();
    println!(
        "soak: {seconds} s, {connections} connections, {:.0} requests/s",
        report.requests as f64 / seconds as f64
    );
    println!(
        "  resident memory: {:.1} MiB after the warm-up, {:.1} MiB at the end ({:+.1}%), peak {:.1} MiB",
        mib(report.rss_start),
        mib(report.rss_end),
        (report.rss_end as f64 / report.rss_start as f64 - 1.0) * 100.0,
        mib(report.rss_peak)
    );
    println!("  answers by status: {}", report.statuses);
    println!(
        "  slow-header connections cut by the server: {} of {}",
        report.slow_cut, report.slow_opened
    );
    println!("  server errors (5xx in /metrics): {server_errors}; panics in the log: {panics}");
    println!("  warnings and errors in the log: {logged}");
    for line in warnings.iter().take(5) {
        println!("    {}", line.chars().take(300).collect::<String>());
    }
    if server_errors > 0 || panics > 0 {
        bail!("the soak saw server errors or panics");
    }
    Ok(())
}

struct Report {
    requests: u64,
    rss_start: u64,
    rss_end: u64,
    rss_peak: u64,
    statuses: String,
    slow_opened: u64,
    slow_cut: u64,
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / f64::from(1 << 20)
}

/// Runs an `aurum` command in `dir` and returns its standard output.
fn aurum(dir: &Path, args: &[&str]) -> Result<String> {
    let output = Command::new(env!("CARGO_BIN_EXE_aurum"))
        .args(args)
        .current_dir(dir)
        .output()?;
    if !output.status.success() {
        bail!(
            "aurum {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
}

/// The server's resident memory, from `/proc`.
fn resident(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        })
        .map_or(0, |kib| kib * 1024)
}

/// The idempotency key of a keyed push: the sender fills its three digits
/// from a counter, so the keys rotate through 1,000 and most keyed pushes
/// replay one sent before. Each key stays with one push's body (a key sent
/// again with another body is refused, 422).
const KEY_DIGITS: &str = "soak-000";

/// The server's anonymous (heap, stacks) and file-backed (its binary, ONNX
/// Runtime, mapped files) resident memory, from `/proc`: only the first can
/// grow with what the server holds.
fn resident_parts(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .map_or(0, |kib| kib * 1024)
    };
    (field("RssAnon:"), field("RssFile:"))
}

/// The server's threads, from `/proc`: the blocking pool grows when work
/// piles up on it, and each new thread's allocator heap keeps what it used.
fn threads(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Threads:"))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0)
}

/// The requests of the mix, cycled by every connection, each with the
/// offset of its idempotency key's digits if it carries one. `features` are
/// the pushed view's features (a push carries every one).
type Mix = Vec<(Vec<u8>, Option<usize>)>;

fn mix(host: &str, read: &str, write: &str, features: &[String], oversize: bool) -> Mix {
    let auth = |token: &str| format!("Authorization: Bearer {token}\r\n");
    let post =
        |path: &str, headers: &str, body: &str| load::post_request_with(host, path, headers, body);
    let now = chrono::Utc::now().to_rfc3339();
    let mut requests = Vec::new();
    for i in 0..100u64 {
        let customer = 1 + (i * 37) % 500;
        let request = match i {
            0..55 => post(
                "/predict",
                &auth(read),
                &format!(r#"{{"model": "fraud", "entities": {{"customer_id": [{customer}, {}]}}}}"#, customer + 1),
            ),
            55..75 => post(
                "/get-online-features",
                &auth(read),
                &format!(
                    r#"{{"feature_service": "fraud_detection", "entities": {{"customer_id": [{customer}]}}}}"#
                ),
            ),
            75..80 => {
                let key = if i % 2 == 0 {
                    format!("Idempotency-Key: {KEY_DIGITS}\r\n")
                } else {
                    String::new()
                };
                let mut df = serde_json::json!({"customer_id": [customer], "event_timestamp": [now]});
                for feature in features {
                    df[feature.as_str()] = serde_json::json!([1.0]);
                }
                post(
                    "/push",
                    &format!("{}{key}", auth(write)),
                    &serde_json::json!({"push_source_name": "customer_features", "to": "online", "df": df})
                        .to_string(),
                )
            }
            80..83 => post("/predict", &auth(read), r#"{"model": "fraud", "entities": "#),
            83..86 => format!(
                "POST /push HTTP/1.1\r\nHost: {host}\r\n{}Content-Type: text/plain\r\nContent-Length: 2\r\n\r\n{{}}",
                auth(write)
            )
            .into_bytes(),
            86..89 => post("/predict", "", r#"{"model": "fraud", "entities": {"customer_id": [1]}}"#),
            89..92 => post("/push", &auth(read), r#"{"push_source_name": "customer_features", "df": {}}"#),
            92..95 => post(
                "/predict",
                &auth(read),
                &format!(r#"{{"model": "fraud", "entities": {{"customer_id": ["{}"]}}}}"#, "k".repeat(2048)),
            ),
            95..98 => post("/predict", &auth(read), r#"{"model": "nobody", "entities": {"customer_id": [1]}}"#),
            98 if oversize => post("/predict", &auth(read), &" ".repeat(9 << 20)),
            98 => post("/predict", &auth(read), r#"{"model": "nobody", "entities": {"customer_id": [2]}}"#),
            _ => b"\x16\x03\x01 this is not HTTP\r\n\r\n".to_vec(),
        };
        let key_at = request
            .windows(KEY_DIGITS.len())
            .position(|w| w == KEY_DIGITS.as_bytes())
            .map(|at| at + KEY_DIGITS.len() - 3);
        requests.push((request, key_at));
    }
    requests
}

fn soak(
    address: SocketAddr,
    pid: u32,
    read: &str,
    write: &str,
    connections: usize,
    seconds: u64,
    oversize: bool,
) -> Result<Report> {
    let views: serde_json::Value =
        serde_json::from_str(&http_get(address, "/feature-views", read)?)?;
    let features: Vec<String> = views
        .as_array()
        .and_then(|views| views.iter().find(|v| v["name"] == "customer_features"))
        .and_then(|v| v["features"].as_array())
        .context("the server lists no customer_features view")?
        .iter()
        .filter_map(|f| f["name"].as_str().map(str::to_string))
        .collect();
    let requests = Arc::new(mix(&address.to_string(), read, write, &features, oversize));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let warmup = Instant::now() + Duration::from_secs(30);
        let end = warmup + Duration::from_secs(seconds);
        let statuses: Arc<[AtomicU64; 600]> = Arc::new(std::array::from_fn(|_| AtomicU64::new(0)));
        let keys = Arc::new(AtomicU64::new(0));
        // Keyed push j of the mix takes the keys congruent to j.
        let keyed: Vec<usize> = (0..requests.len())
            .filter(|&i| requests[i].1.is_some())
            .collect();
        let keyed = Arc::new(keyed);
        let done = Arc::new(AtomicBool::new(false));
        let mut tasks = Vec::new();
        for c in 0..connections {
            let (requests, statuses, keys, keyed) = (
                requests.clone(),
                statuses.clone(),
                keys.clone(),
                keyed.clone(),
            );
            tasks.push(tokio::spawn(async move {
                let mut buffer = Vec::with_capacity(64 << 10);
                let mut i = c;
                let mut stream = None;
                while Instant::now() < end {
                    let conn = match stream.as_mut() {
                        Some(conn) => conn,
                        None => {
                            let tcp = tokio::net::TcpStream::connect(address).await?;
                            tcp.set_nodelay(true)?;
                            stream.insert(tcp)
                        }
                    };
                    let which = i % requests.len();
                    let (request, key_at) = &requests[which];
                    i += connections;
                    let with_key;
                    let request = match key_at {
                        Some(at) => {
                            let count = keyed.len() as u64;
                            let ordinal =
                                keyed.iter().position(|&k| k == which).unwrap_or(0) as u64;
                            let n = keys.fetch_add(1, Ordering::Relaxed) % (1000 / count) * count
                                + ordinal;
                            let mut copy = request.clone();
                            copy[*at..*at + 3].copy_from_slice(format!("{n:03}").as_bytes());
                            with_key = copy;
                            &with_key
                        }
                        None => request,
                    };
                    // The server may answer (and close) before reading a
                    // whole oversize body: a write error is the answer.
                    let answer = match conn.write_all(request).await {
                        Ok(()) => load::read_response(conn, &mut buffer).await.ok(),
                        Err(_) => None,
                    };
                    match answer {
                        Some(status) => {
                            statuses[usize::from(status).min(599)].fetch_add(1, Ordering::Relaxed);
                            if status == 400 || status == 413 {
                                // Bad framing closes the connection.
                                stream = None;
                            }
                        }
                        None => {
                            statuses[0].fetch_add(1, Ordering::Relaxed);
                            stream = None;
                        }
                    }
                }
                anyhow::Ok(())
            }));
        }
        // Slow-header clients: one a second, each left open until cut.
        let (slow_opened, slow_cut) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let slow = {
            let (opened, cut, done) = (slow_opened.clone(), slow_cut.clone(), done.clone());
            tokio::spawn(async move {
                while !done.load(Ordering::Relaxed) {
                    if let Ok(mut tcp) = tokio::net::TcpStream::connect(address).await {
                        opened.fetch_add(1, Ordering::Relaxed);
                        let cut = cut.clone();
                        tokio::spawn(async move {
                            let _ = tcp.write_all(b"GET /health/live HTTP/1.1\r\nHost: x").await;
                            let mut byte = [0u8; 1];
                            let read = tokio::time::timeout(
                                Duration::from_secs(30),
                                tokio::io::AsyncReadExt::read(&mut tcp, &mut byte),
                            )
                            .await;
                            if matches!(read, Ok(Ok(0)) | Ok(Err(_))) {
                                cut.fetch_add(1, Ordering::Relaxed);
                            }
                        });
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            })
        };
        tokio::time::sleep_until(warmup.into()).await;
        let rss_start = resident(pid);
        let mut rss_peak = rss_start;
        let before: u64 = statuses.iter().map(|s| s.load(Ordering::Relaxed)).sum();
        while Instant::now() < end {
            tokio::time::sleep(Duration::from_secs(10)).await;
            let now = resident(pid);
            rss_peak = rss_peak.max(now);
            let (anon, file) = resident_parts(pid);
            eprintln!(
                "  {:>4} s: resident {:.1} MiB (anonymous {:.1}, file-backed {:.1}), {} threads",
                (Instant::now() - warmup).as_secs(),
                mib(now),
                mib(anon),
                mib(file),
                threads(pid)
            );
        }
        let rss_end = resident(pid);
        for task in tasks {
            task.await??;
        }
        done.store(true, Ordering::Relaxed);
        // Let the last slow clients be cut.
        tokio::time::sleep(Duration::from_secs(6)).await;
        slow.abort();
        let total: u64 = statuses.iter().map(|s| s.load(Ordering::Relaxed)).sum();
        let statuses = statuses
            .iter()
            .enumerate()
            .filter(|(_, n)| n.load(Ordering::Relaxed) > 0)
            .map(|(status, n)| {
                let label = if status == 0 {
                    "closed".to_string()
                } else {
                    status.to_string()
                };
                format!("{label}: {}", n.load(Ordering::Relaxed))
            })
            .collect::<Vec<_>>()
            .join(", ");
        Ok(Report {
            requests: total - before,
            rss_start,
            rss_end,
            rss_peak,
            statuses,
            slow_opened: slow_opened.load(Ordering::Relaxed),
            slow_cut: slow_cut.load(Ordering::Relaxed),
        })
    })
}

/// The server's `/metrics` text.
fn scrape(address: SocketAddr) -> Result<String> {
    http_get(address, "/metrics", "")
}

/// The body of a GET of `path` (with a bearer `token`, unless empty).
fn http_get(address: SocketAddr, path: &str, token: &str) -> Result<String> {
    use std::io::{Read, Write};
    let mut tcp = std::net::TcpStream::connect(address)?;
    let auth = if token.is_empty() {
        String::new()
    } else {
        format!("Authorization: Bearer {token}\r\n")
    };
    write!(
        tcp,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}Connection: close\r\n\r\n"
    )?;
    let mut text = String::new();
    tcp.read_to_string(&mut text)?;
    let (head, body) = text
        .split_once("\r\n\r\n")
        .context("an HTTP answer without a body")?;
    if !head.starts_with("HTTP/1.1 200") {
        bail!("GET {path}: {head}");
    }
    Ok(body.to_string())
}

/// The 5xx answers `/metrics` counted (`aurum_http_errors_total` by status).
fn server_errors(metrics: &str) -> u64 {
    metrics
        .lines()
        .filter(|l| l.starts_with("aurum_http_errors_total") && l.contains("status=\"5"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}
