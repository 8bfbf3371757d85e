//! The real `aurum serve` process, and the synchronous tests' HTTP calls
//! and polling.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// A running `aurum serve`, killed when dropped.
pub(crate) struct Server {
    pub(crate) child: Child,
    /// The HTTP base URL.
    pub(crate) url: String,
    /// The Flight address.
    pub(crate) flight: String,
    /// The Open Inference Protocol's gRPC address (host:port).
    pub(crate) grpc: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback port free a moment ago, for servers that cannot be told to
/// pick one themselves (Redis, Prometheus's tools).
pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("binding a loopback port")
        .local_addr()
        .expect("the bound address")
        .port()
}

/// Starts `aurum serve` on an ephemeral port and returns once it prints
/// `ready` (after the warm start), so no polling or sleeping is needed.
pub(crate) fn start(dir: &Path) -> Server {
    start_with(dir, &[])
}

/// [`start`] with more `aurum serve` flags.
pub(crate) fn start_with(dir: &Path, flags: &[&str]) -> Server {
    start_in_env(dir, flags, &[])
}

/// [`start_with`] with more environment variables (credentials).
pub(crate) fn start_in_env(dir: &Path, flags: &[&str], env: &[(&str, &str)]) -> Server {
    let mut child = Command::new(env!("CARGO_BIN_EXE_aurum"))
        .envs(env.iter().copied())
        .args([
            "serve",
            "--addr",
            "127.0.0.1:0",
            "--flight-addr",
            "127.0.0.1:0",
            "--grpc-addr",
            "127.0.0.1:0",
        ])
        .args(flags)
        .current_dir(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("starting aurum serve");
    let stdout = child.stdout.take().expect("stdout is piped");
    let (mut url, mut flight, mut grpc) = (None, None, None);
    for line in BufReader::new(stdout).lines() {
        let line = line.expect("reading the server's output");
        if let Some(address) = line.strip_prefix("listening on ") {
            url = Some(address.to_string());
        }
        if let Some(address) = line.strip_prefix("flight on ") {
            flight = Some(address.to_string());
        }
        if let Some(address) = line.strip_prefix("grpc on ") {
            grpc = Some(address.to_string());
        }
        if line == "ready" {
            break;
        }
    }
    Server {
        child,
        url: url.expect("the server printed its address before ready"),
        flight: flight.expect("the server printed its Flight address before ready"),
        grpc: grpc.expect("the server printed its gRPC address before ready"),
    }
}

/// Runs `future` to completion on a runtime of its own: the tests are
/// synchronous, the HTTP client is not.
pub(crate) fn block_on<F: Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a test runtime")
        .block_on(future)
}

/// An HTTP answer.
pub(crate) struct Reply {
    pub(crate) status: u16,
    pub(crate) text: String,
    /// The `x-request-id` answered (empty without one).
    pub(crate) request_id: String,
}

impl Reply {
    /// The body as JSON, `null` when it is not JSON.
    pub(crate) fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or(Value::Null)
    }
}

/// One call: `GET url`, or a `POST url` of `body`; `arm` picks the A/B arm
/// (`x-aurum-arm`).
pub(crate) fn call(method: &str, url: &str, body: Option<&Value>, arm: Option<&str>) -> Reply {
    let client = reqwest::Client::new();
    let mut request = match method {
        "GET" => client.get(url),
        _ => client.post(url),
    };
    if let Some(body) = body {
        request = request.json(body);
    }
    if let Some(arm) = arm {
        request = request.header("x-aurum-arm", arm);
    }
    block_on(async {
        let response = request.send().await.expect("calling the server");
        let status = response.status().as_u16();
        let request_id = response
            .headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        Reply {
            status,
            text: response.text().await.unwrap_or_default(),
            request_id,
        }
    })
}

/// Calls `attempt` every `every` until it answers, for at most `limit`;
/// then fails with `why()`. For what only shows after a while (a server
/// coming up, rows handed to a background writer), with a deadline so a
/// regression fails rather than hangs.
pub(crate) fn poll<T>(
    limit: Duration,
    every: Duration,
    mut attempt: impl FnMut() -> Option<T>,
    why: impl Fn() -> String,
) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(done) = attempt() {
            return done;
        }
        assert!(Instant::now() < deadline, "{}", why());
        std::thread::sleep(every);
    }
}

/// [`poll`] every 100 ms for up to a minute, naming `what` if it gives up.
pub(crate) fn eventually<T>(what: &str, attempt: impl FnMut() -> Option<T>) -> T {
    poll(
        Duration::from_secs(60),
        Duration::from_millis(100),
        attempt,
        || format!("gave up waiting for {what}"),
    )
}
