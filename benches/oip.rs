//! The Open Inference Protocol (issue 23): throughput of one-row inference
//! (8 FP32 features) over gRPC and over HTTP with JSON tensors, the same
//! model and server, `--connections` closed-loop clients each; and the time
//! to parse a `--rows` × 8 request as JSON and as binary tensor data.
//!
//! usage:
//!   cargo bench --bench oip -- [--seconds S] [--connections C] [--rows R]
//!
//! The server (HTTP and gRPC) runs in this process on its own 2-thread
//! runtime, each load generator on one more thread: all on the same 2
//! cores.

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
}

fn main() -> Result<()> {
    cli::init_logging();
    let mut o = Options {
        seconds: 10,
        connections: 16,
        rows: 10_000,
    };
    cli::flags(|name, value| {
        match name {
            "--seconds" => o.seconds = value()?.parse()?,
            "--connections" => o.connections = value()?.parse()?,
            "--rows" => o.rows = value()?.parse()?,
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

    let row: Vec<f32> = (0..WIDTH).map(|i| 0.1 * i as f32).collect();
    let body = serde_json::json!({"inputs": [{"name": "x", "shape": [1, WIDTH], "datatype": "FP32",
                                              "data": row}]})
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
        "HTTP JSON /v2/models/{MODEL}/infer, 1 row x {WIDTH}, {} connections",
        o.connections
    ));

    let cpu_before = server_cpu_seconds()?;
    let (grpc_rate, grpc_errors, nanos) = grpc_load(grpc, &row, o.connections, o.seconds)?;
    let grpc_cpu = server_cpu_seconds()? - cpu_before;
    let grpc_requests = grpc_rate * (o.seconds as f64 + 2.0);
    println!(
        "gRPC ModelInfer, 1 row x {WIDTH}, {} connections: {grpc_rate:.0} requests/s ({grpc_errors} errors)",
        o.connections
    );
    load::percentiles("  latency", nanos);
    let http_us = http_cpu / http_requests * 1e6;
    let grpc_us = grpc_cpu / grpc_requests * 1e6;
    println!(
        "server CPU per request (approx., warm-up included): HTTP JSON {http_us:.1} µs, gRPC \
         {grpc_us:.1} µs ({:.2}x)",
        http_us / grpc_us
    );
    println!(
        "gRPC / HTTP JSON throughput: {:.2} (errors: HTTP {http_errors}, gRPC {grpc_errors})",
        grpc_rate / http_rate
    );
    Ok(())
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

/// A closed-loop gRPC load: `connections` HTTP/2 connections, each sending
/// its next `ModelInfer` when the previous answer is in, for `seconds`
/// after a 2-second warm-up, on one thread. Requests per second, errors
/// and latencies.
fn grpc_load(
    addr: std::net::SocketAddr,
    row: &[f32],
    connections: usize,
    seconds: u64,
) -> Result<(f64, usize, Vec<u64>)> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let raw: Vec<u8> = row.iter().flat_map(|v| v.to_le_bytes()).collect();
    let request = ModelInferRequest {
        model_name: MODEL.to_string(),
        inputs: vec![InferInputTensor {
            name: "x".into(),
            datatype: "FP32".into(),
            shape: vec![1, WIDTH as i64],
            ..InferInputTensor::default()
        }],
        raw_input_contents: vec![raw],
        ..ModelInferRequest::default()
    };
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
        let (mut done, mut errors, mut nanos) = (0, 0, Vec::new());
        for task in tasks {
            let (d, e, n) = task.await??;
            done += d;
            errors += e;
            nanos.extend(n);
        }
        Ok((done as f64 / seconds as f64, errors, nanos))
    })
}
