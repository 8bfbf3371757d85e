//! The Open Inference Protocol (issue 23): throughput of one-row inference
//! (8 FP32 features; `--batch` rows a request) over gRPC and over HTTP with JSON tensors, the same
//! model and server, `--connections` closed-loop clients each; and the time
//! to parse a `--rows` × 8 request as JSON and as binary tensor data.
//!
//! usage:
//!   cargo bench --bench oip -- [--seconds S] [--connections C] [--rows R]
//!        [--batch B]
//!
//! The server (HTTP and gRPC) runs in this process on its own 2-thread
//! runtime, each load generator on one more thread: all on the same 2
//! cores. gRPC is loaded twice: by a raw HTTP/2 client that sends
//! pre-encoded frames (the counterpart of the raw HTTP/1.1 client the JSON
//! route gets, so the clients' own costs match) and by tonic's client.

#[path = "common/cli.rs"]
mod cli;
#[path = "common/load.rs"]
mod load;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use axum::http::HeaderMap;
use feature_store::online::OnlineStore;
use load::{post_request, run_load};
use onnx::{Dim, GraphBuilder};
use serving::protocols::oip::parse_request;
use serving::protocols::oip_grpc::OipGrpc;
use serving::protocols::oip_grpc::messages::{
    InferInputTensor, ModelInferRequest, ModelInferResponse,
};

const MODEL: &str = "m";
/// The name of the server's threads (workers and blocking), whose CPU time
/// the bench reads from `/proc`.
const SERVER_THREADS: &str = "oip-server";
const WIDTH: usize = 8;

struct Options {
    seconds: u64,
    connections: usize,
    rows: usize,
    /// Rows in each request of the load.
    batch: usize,
}

fn main() -> Result<()> {
    cli::init_logging();
    let mut o = Options {
        seconds: 10,
        connections: 16,
        rows: 10_000,
        batch: 1,
    };
    cli::flags(|name, value| {
        match name {
            "--seconds" => o.seconds = value()?.parse()?,
            "--connections" => o.connections = value()?.parse()?,
            "--rows" => o.rows = value()?.parse()?,
            "--batch" => o.batch = value()?.parse::<usize>()?.max(1),
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    let dir = tempfile::tempdir()?;
    let registry = registry::Registry::open(dir.path().join("registry"))?;
    registry.register(MODEL, &linear_model(), registry::NewVersion::default())?;
    let signature = registry.version(MODEL, 1)?.signature;
    parse_times(&signature, o.rows)?;

    let server = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name(SERVER_THREADS)
        .enable_all()
        .build()?;
    let (http, grpc) = server.block_on(async {
        let state = Arc::new(serving::AppState::new(
            Arc::new(OnlineStore::new(64 << 20)),
            registry.clone(),
        ));
        state.sync_models();
        state.set_ready(true);
        let http = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let grpc = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addresses = (http.local_addr()?, grpc.local_addr()?);
        tokio::spawn(serving::serve(
            http,
            state.clone(),
            std::future::pending::<()>(),
        ));
        tokio::spawn(OipGrpc::new(state).serve(grpc, std::future::pending::<()>()));
        anyhow::Ok(addresses)
    })?;

    let batch = o.batch;
    let rows: Vec<f32> = (0..batch * WIDTH)
        .map(|i| 0.1 * (i % WIDTH) as f32)
        .collect();
    let body =
        serde_json::json!({"inputs": [{"name": "x", "shape": [batch, WIDTH], "datatype": "FP32",
                                              "data": rows}]})
        .to_string();
    let request = post_request(
        &http.to_string(),
        &format!("/v2/models/{MODEL}/infer"),
        &body,
    );
    let cpu_before = server_cpu_seconds()?;
    let report = run_load(http, vec![request], o.connections, o.seconds)?;
    let http_cpu = server_cpu_seconds()? - cpu_before;
    let http_rate = report.requests as f64 / report.seconds;
    let http_errors = report.errors;
    // Warm-up requests count too: the server's CPU over every request.
    let http_requests = report.requests as f64 * (o.seconds as f64 + 2.0) / o.seconds as f64;
    report.print(&format!(
        "HTTP JSON /v2/models/{MODEL}/infer, {batch} row(s) x {WIDTH}, {} connections",
        o.connections
    ));

    let http_us = http_cpu / http_requests * 1e6;
    println!("  server CPU per request (approx., warm-up included): {http_us:.1} µs");

    let request = infer_request(&rows, batch);
    for client in [GrpcClient::RawHttp2, GrpcClient::Tonic] {
        let cpu_before = server_cpu_seconds()?;
        let (rate, errors, nanos) = match client {
            GrpcClient::RawHttp2 => h2_load(grpc, &request, o.connections, o.seconds)?,
            GrpcClient::Tonic => grpc_load(grpc, &request, o.connections, o.seconds)?,
        };
        let cpu = server_cpu_seconds()? - cpu_before;
        let us = cpu / (rate * (o.seconds as f64 + 2.0)) * 1e6;
        println!(
            "gRPC ModelInfer ({}), {batch} row(s) x {WIDTH}, {} connections: {rate:.0} requests/s \
             ({errors} errors)",
            client.name(),
            o.connections
        );
        load::percentiles("  latency", nanos);
        println!(
            "  server CPU per request (approx., warm-up included): {us:.1} µs (HTTP JSON / gRPC \
             {:.2}x)",
            http_us / us
        );
        println!(
            "  gRPC ({}) / HTTP JSON throughput: {:.2} (errors: HTTP {http_errors}, gRPC \
             {errors})",
            client.name(),
            rate / http_rate
        );
    }
    Ok(())
}

/// The gRPC load generators: raw HTTP/2 frames, the counterpart of the raw
/// HTTP/1.1 generator the JSON route gets, and tonic's client, what a Rust
/// caller would use.
#[derive(Clone, Copy)]
enum GrpcClient {
    RawHttp2,
    Tonic,
}

impl GrpcClient {
    fn name(self) -> &'static str {
        match self {
            GrpcClient::RawHttp2 => "raw HTTP/2 client",
            GrpcClient::Tonic => "tonic client",
        }
    }
}

/// `batch` rows (`values`, row-major) as a `ModelInfer` request with raw
/// contents (what tritonclient sends).
fn infer_request(values: &[f32], batch: usize) -> ModelInferRequest {
    let raw: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    ModelInferRequest {
        model_name: MODEL.to_string(),
        inputs: vec![InferInputTensor {
            name: "x".into(),
            datatype: "FP32".into(),
            shape: vec![batch as i64, WIDTH as i64],
            ..InferInputTensor::default()
        }],
        raw_input_contents: vec![raw],
        ..ModelInferRequest::default()
    }
}

/// A closed-loop gRPC load over raw HTTP/2 (the `h2` crate), as
/// [`load::run_load`] is over raw HTTP/1.1: `connections` connections on
/// one thread, each sending the same `ModelInfer` message (encoded once,
/// with gRPC's 5-byte length prefix) when the previous answer is in, and
/// reading the answer's frames without decoding the message; a call counts
/// when its trailers say `grpc-status: 0`.
fn h2_load(
    addr: std::net::SocketAddr,
    request: &ModelInferRequest,
    connections: usize,
    seconds: u64,
) -> Result<(f64, usize, Vec<u64>)> {
    use prost::Message;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let message = request.encode_to_vec();
    let mut framed = Vec::with_capacity(5 + message.len());
    framed.push(0); // not compressed
    framed.extend_from_slice(&(message.len() as u32).to_be_bytes());
    framed.extend_from_slice(&message);
    let framed = bytes::Bytes::from(framed);
    runtime.block_on(async move {
        let warmup = Instant::now() + Duration::from_secs(2);
        let end = warmup + Duration::from_secs(seconds);
        let mut tasks = Vec::new();
        for _ in 0..connections {
            let tcp = tokio::net::TcpStream::connect(addr)
                .await
                .context("connecting to the gRPC service")?;
            tcp.set_nodelay(true)?;
            let (client, connection) = h2::client::handshake(tcp).await?;
            tokio::spawn(connection);
            let framed = framed.clone();
            tasks.push(tokio::spawn(async move {
                let mut client = client.ready().await?;
                let (mut done, mut errors, mut nanos) = (0usize, 0usize, Vec::new());
                loop {
                    let started = Instant::now();
                    if started >= end {
                        break;
                    }
                    let call = http::Request::post(format!(
                        "http://{addr}/inference.GRPCInferenceService/ModelInfer"
                    ))
                    .header("content-type", "application/grpc")
                    .header("te", "trailers")
                    .body(())?;
                    let (answer, mut body) = client.send_request(call, false)?;
                    body.send_data(framed.clone(), true)?;
                    let ok = read_answer(answer).await?;
                    client = client.ready().await?;
                    if started >= warmup {
                        if ok {
                            done += 1;
                            nanos.push(started.elapsed().as_nanos() as u64);
                        } else {
                            errors += 1;
                        }
                    }
                }
                anyhow::Ok((done, errors, nanos))
            }));
        }
        gather(tasks, seconds).await
    })
}

/// Reads a gRPC answer's frames (its message bytes released, not decoded);
/// whether its status, in the trailers or a trailers-only answer, is OK.
async fn read_answer(answer: h2::client::ResponseFuture) -> Result<bool> {
    let answer = answer.await?;
    let status_ok =
        |headers: &http::HeaderMap| headers.get("grpc-status").map(|v| v.as_bytes() == b"0");
    if let Some(ok) = status_ok(answer.headers()) {
        return Ok(ok);
    }
    let mut body = answer.into_body();
    let mut bytes = 0;
    while let Some(chunk) = body.data().await {
        let chunk = chunk?;
        bytes += chunk.len();
        body.flow_control().release_capacity(chunk.len())?;
    }
    let trailers = body.trailers().await?;
    Ok(bytes > 5 && trailers.as_ref().and_then(status_ok) == Some(true))
}

/// The CPU time (user + system) the server's threads have used so far.
fn server_cpu_seconds() -> Result<f64> {
    let ticks_per_second = 100.0; // USER_HZ on Linux
    let mut ticks = 0u64;
    for task in std::fs::read_dir("/proc/self/task")? {
        let stat = std::fs::read_to_string(task?.path().join("stat"))?;
        // `pid (comm) state ...`: the comm may hold spaces, so split after it.
        let Some((head, rest)) = stat.rsplit_once(") ") else {
            continue;
        };
        if !head.contains(SERVER_THREADS) {
            continue;
        }
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // utime and stime are fields 14 and 15 of the line, 12 and 13 here.
        let utime: u64 = fields.get(11).and_then(|f| f.parse().ok()).unwrap_or(0);
        let stime: u64 = fields.get(12).and_then(|f| f.parse().ok()).unwrap_or(0);
        ticks += utime + stime;
    }
    Ok(ticks as f64 / ticks_per_second)
}

/// A linear model over `WIDTH` float inputs (a sigmoid of a dot product).
fn linear_model() -> Vec<u8> {
    let mut g = GraphBuilder::new("linear");
    let weights: Vec<f32> = (0..WIDTH).map(|i| 0.5 + i as f32).collect();
    g.input("x", &[Dim::Dynamic("batch"), Dim::Fixed(WIDTH as i64)])
        .output("y", &[Dim::Dynamic("batch"), Dim::Fixed(1)])
        .constant("w", &[WIDTH as i64, 1], &weights)
        .node("MatMul", &["x", "w"], &["z"])
        .node("Sigmoid", &["z"], &["y"]);
    g.finish("bench model")
}

/// The median time to parse and check a `rows` × 8 request as JSON and as
/// binary tensor data.
fn parse_times(signature: &registry::Signature, rows: usize) -> Result<()> {
    let values: Vec<f32> = (0..rows * WIDTH).map(|i| (i % 97) as f32 * 0.37).collect();
    let json = serde_json::json!({"inputs": [{"name": "x", "shape": [rows, WIDTH],
                                              "datatype": "FP32", "data": values}]})
    .to_string()
    .into_bytes();
    let header = serde_json::json!({"inputs": [{"name": "x", "shape": [rows, WIDTH], "datatype": "FP32",
                                                "parameters": {"binary_data_size": values.len() * 4}}]})
    .to_string();
    let mut binary = header.clone().into_bytes();
    binary.extend(values.iter().flat_map(|v| v.to_le_bytes()));
    let mut binary_headers = HeaderMap::new();
    binary_headers.insert("inference-header-content-length", header.len().into());

    let median = |headers: &HeaderMap, body: &[u8]| -> Result<Duration> {
        let mut times = Vec::new();
        for _ in 0..31 {
            let started = Instant::now();
            let (_, prepared) = parse_request(signature, headers, body)?;
            times.push(started.elapsed());
            std::hint::black_box(prepared);
        }
        times.sort();
        Ok(times[times.len() / 2])
    };
    let json_time = median(&HeaderMap::new(), &json)?;
    let binary_time = median(&binary_headers, &binary)?;
    println!(
        "parse {rows} rows x {WIDTH} FP32: JSON {:.2} ms ({} bytes), binary {:.3} ms ({} bytes): \
         binary {:.1}x faster",
        json_time.as_secs_f64() * 1e3,
        json.len(),
        binary_time.as_secs_f64() * 1e3,
        binary.len(),
        json_time.as_secs_f64() / binary_time.as_secs_f64()
    );
    Ok(())
}

/// A closed-loop gRPC load through tonic's client: `connections` HTTP/2 connections, each sending
/// its next `ModelInfer` when the previous answer is in, for `seconds`
/// after a 2-second warm-up, on one thread. Requests per second, errors
/// and latencies.
fn grpc_load(
    addr: std::net::SocketAddr,
    request: &ModelInferRequest,
    connections: usize,
    seconds: u64,
) -> Result<(f64, usize, Vec<u64>)> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let request = request.clone();
    runtime.block_on(async move {
        let warmup = Instant::now() + Duration::from_secs(2);
        let end = warmup + Duration::from_secs(seconds);
        let mut tasks = Vec::new();
        for _ in 0..connections {
            let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
                .connect()
                .await
                .context("connecting to the gRPC service")?;
            let request = request.clone();
            tasks.push(tokio::spawn(async move {
                let mut client = tonic::client::Grpc::new(channel);
                let path = tonic::codegen::http::uri::PathAndQuery::from_static(
                    "/inference.GRPCInferenceService/ModelInfer",
                );
                let (mut done, mut errors, mut nanos) = (0usize, 0usize, Vec::new());
                loop {
                    let started = Instant::now();
                    if started >= end {
                        break;
                    }
                    client.ready().await?;
                    let codec =
                        tonic_prost::ProstCodec::<ModelInferRequest, ModelInferResponse>::default();
                    let answer = client
                        .unary(tonic::Request::new(request.clone()), path.clone(), codec)
                        .await;
                    if started >= warmup {
                        match answer {
                            Ok(_) => {
                                done += 1;
                                nanos.push(started.elapsed().as_nanos() as u64);
                            }
                            Err(_) => errors += 1,
                        }
                    }
                }
                anyhow::Ok((done, errors, nanos))
            }));
        }
        gather(tasks, seconds).await
    })
}

/// What one load task counts: requests done, errors, latencies in
/// nanoseconds.
type Counts = (usize, usize, Vec<u64>);

/// Sums the load tasks' counts (requests done, errors, latencies in
/// nanoseconds) into requests per second, errors and all the latencies.
async fn gather(
    tasks: Vec<tokio::task::JoinHandle<Result<Counts>>>,
    seconds: u64,
) -> Result<(f64, usize, Vec<u64>)> {
    let (mut done, mut errors, mut nanos) = (0, 0, Vec::new());
    for task in tasks {
        let (d, e, n) = task.await??;
        done += d;
        errors += e;
        nanos.extend(n);
    }
    Ok((done as f64 / seconds as f64, errors, nanos))
}
