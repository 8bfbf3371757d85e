//! The shared online tier against real Redis servers (Debian's
//! `redis-server`, installed by `scripts/install-redis.sh`), standalone and
//! a 3-master cluster on loopback ports: replicas that answer alike, pushes
//! that survive a replica's `kill -9`, a Redis restart that turns replicas
//! not-ready instead of wrong, and errors that name the server without its
//! password.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

use crate::cli::{example_project_event_windows, ok};
use crate::server::{Server, call, eventually, free_port, poll, start_in_env};

fn redis_bin(name: &str) -> PathBuf {
    let path = crate::python::workspace()
        .join(".tools/redis/bin")
        .join(name);
    assert!(
        path.exists(),
        "{} is missing: run `make redis` (scripts/install-redis.sh)",
        path.display()
    );
    path
}

/// A `redis-server` on a loopback port, its data (append-only file) in a
/// temporary directory; stopped when dropped.
struct Redis {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
    extra: Vec<String>,
}

impl Redis {
    fn start(extra: &[&str]) -> Redis {
        let mut redis = Redis {
            child: None,
            port: free_port(),
            dir: tempfile::tempdir().unwrap(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
        };
        redis.spawn();
        redis
    }

    fn spawn(&mut self) {
        let child = Command::new(redis_bin("redis-server"))
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--save", "", "--appendonly", "yes"])
            .arg("--dir")
            .arg(self.dir.path())
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting redis-server");
        self.child = Some(child);
        let port = self.port;
        let password = self.password();
        eventually("redis-server to answer PING", || {
            (cli(port, password.as_deref(), &["PING"]) == "PONG").then_some(())
        });
    }

    fn password(&self) -> Option<String> {
        let at = self.extra.iter().position(|a| a == "--requirepass")?;
        self.extra.get(at + 1).cloned()
    }

    /// Stops the server (SIGTERM: the append-only file is flushed).
    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let _ = child.wait();
        }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `redis-cli` against a local port; its output, trimmed.
fn cli(port: u16, password: Option<&str>, args: &[&str]) -> String {
    let mut command = Command::new(redis_bin("redis-cli"));
    command.args(["-h", "127.0.0.1", "-p", &port.to_string()]);
    if let Some(password) = password {
        command.env("REDISCLI_AUTH", password);
    }
    let output = command.args(args).output().expect("running redis-cli");
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

fn serve_redis(dir: &Path, url: &str, flags: &[&str]) -> Server {
    let mut all = vec!["--online-store", "redis"];
    all.extend_from_slice(flags);
    start_in_env(dir, &all, &[("AURUM_REDIS_URL", url)])
}

fn post(url: &str, body: &Value) -> (u16, Value) {
    let reply = call("POST", url, Some(body), None);
    (reply.status, reply.json())
}

const FEATURES: [&str; 3] = [
    "customer_features:amount_sum_7d",
    "customer_features:amount_count_1d",
    "customer_features:amount_mean_7d",
];

fn lookup(server: &Server, customers: &[i64]) -> (u16, Value) {
    post(
        &format!("{}/get-online-features", server.url),
        &json!({"entities": {"customer_id": customers}, "features": FEATURES}),
    )
}

/// The values and statuses of a lookup's answer (event timestamps left
/// out: they are the same rows, but a replica's own clock is not compared).
fn answered(answer: &Value) -> Value {
    let results = answer["results"].as_array().expect("results");
    Value::Array(
        results
            .iter()
            .map(|r| json!({"values": r["values"], "statuses": r["statuses"]}))
            .collect(),
    )
}

/// A push of one row for `customer` with every feature of the view `value`.
fn push_row(server: &Server, customer: i64, value: f64) -> (u16, Value) {
    push_row_to(server, customer, value, "online")
}

/// [`push_row`] to the stores `to` names.
fn push_row_to(server: &Server, customer: i64, value: f64, to: &str) -> (u16, Value) {
    let views = call("GET", &format!("{}/feature-views", server.url), None, None).json();
    let mut df = serde_json::Map::new();
    df.insert("customer_id".into(), json!([customer]));
    df.insert(
        "event_timestamp".into(),
        json!([chrono::Utc::now().to_rfc3339()]),
    );
    for feature in views[0]["features"].as_array().unwrap() {
        df.insert(feature["name"].as_str().unwrap().into(), json!([value]));
    }
    post(
        &format!("{}/push", server.url),
        &json!({"push_source_name": "customer_features", "df": df, "to": to}),
    )
}

/// The `SCAN` pattern of the hashes holding an entity's rows.
fn bucket_pattern(entity: &str) -> String {
    let bucket = feature_store::online::shared::bucket_of(entity);
    format!("aurum:{{{bucket:04x}}}:*")
}

fn metric(server: &Server, name: &str) -> f64 {
    let text = call("GET", &format!("{}/metrics", server.url), None, None).text;
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("{name} is not on /metrics"))
}

#[test]
fn replicas_over_one_redis_answer_alike_and_lose_no_acknowledged_push() {
    let project = example_project_event_windows("3000", "3");
    let dir = project.path();
    ok(dir, &["train", "--promote-if-better"]);
    let mut redis = Redis::start(&[]);
    let url = redis.url();

    // The first replica loads gold into Redis; the next ones find it there.
    let replicas: Vec<Server> = (0..3).map(|_| serve_redis(dir, &url, &[])).collect();
    let memory = crate::server::start(dir);
    let customers: Vec<i64> = (1..=40).collect();
    let (status, expected) = lookup(&memory, &customers);
    assert_eq!(status, 200, "{expected}");
    for replica in &replicas {
        let (status, answer) = lookup(replica, &customers);
        assert_eq!(status, 200, "{answer}");
        assert_eq!(
            answered(&answer),
            answered(&expected),
            "a replica over Redis answers as the memory store does"
        );
    }
    drop(memory);

    // The same /predict answer (champion, arm, score) from every replica.
    let request = json!({"model": "fraud", "entities": {"customer_id": [1, 2, 3, 4]}});
    let answers: Vec<Value> = replicas
        .iter()
        .map(|r| {
            let (status, answer) = post(&format!("{}/predict", r.url), &request);
            assert_eq!(status, 200, "{answer}");
            answer["predictions"].clone()
        })
        .collect();
    assert_eq!(answers[0], answers[1]);
    assert_eq!(answers[0], answers[2]);

    // A push to one replica is read by the others, whose L1 held the old
    // row a moment before (invalidated by the tier's notice).
    for replica in &replicas[1..] {
        lookup(replica, &[1]);
    }
    let (status, pushed) = push_row(&replicas[0], 1, 4242.5);
    assert_eq!(status, 200, "{pushed}");
    assert_eq!(pushed["online_written"], 1, "{pushed}");
    for replica in &replicas[1..] {
        // Without the notice L1 would serve the old row for good: a couple
        // of seconds is ample for a PUBLISH on loopback, even on a loaded
        // machine (the bound itself is measured by the bench).
        poll(
            Duration::from_secs(2),
            Duration::from_millis(5),
            || {
                let (_, answer) = lookup(replica, &[1]);
                (answer["results"][1]["values"][0] == json!(4242.5)).then_some(())
            },
            || "another replica still serves the replaced row".to_string(),
        );
    }
    assert!(metric(&replicas[1], "aurum_online_tier_invalidations_total") >= 1.0);
    assert!(metric(&replicas[1], "aurum_online_tier_l1_hits_total") >= 1.0);

    // Pushes acknowledged by a replica killed right after are all kept.
    let mut doomed = replicas.into_iter();
    let (first, second, mut third) = (
        doomed.next().unwrap(),
        doomed.next().unwrap(),
        doomed.next().unwrap(),
    );
    for customer in 500..520 {
        let (status, answer) = push_row(&third, customer, customer as f64);
        assert_eq!(status, 200, "{answer}");
    }
    third.child.kill().unwrap(); // SIGKILL
    let _ = third.child.wait();
    let pushed: Vec<i64> = (500..520).collect();
    for survivor in [&first, &second] {
        let (status, answer) = lookup(survivor, &pushed);
        assert_eq!(status, 200, "{answer}");
        let expected: Vec<f64> = pushed.iter().map(|&c| c as f64).collect();
        assert_eq!(answer["results"][1]["values"], json!(expected));
    }

    // Redis restarts: the replicas turn not-ready and answer 503 naming the
    // tier (never a stale value), then recover on their own.
    redis.stop();
    eventually("a replica to report the tier down", || {
        let reply = call("GET", &format!("{}/health/ready", first.url), None, None);
        (reply.status == 503).then(|| {
            assert_eq!(reply.json()["status"], "online_tier_unavailable");
        })
    });
    let (status, answer) = lookup(&first, &[1]);
    assert_eq!(status, 503, "{answer}");
    assert_eq!(answer["error"]["code"], "online_tier_unavailable");
    // A push to both stores is refused whole (before its gold commit).
    let (status, answer) = push_row_to(&first, 9, 9.0, "online_and_offline");
    assert_eq!(status, 503, "{answer}");
    assert_eq!(answer["error"]["code"], "online_tier_unavailable");
    redis.spawn();
    for replica in [&first, &second] {
        eventually("the replica to be ready again", || {
            let reply = call("GET", &format!("{}/health/ready", replica.url), None, None);
            (reply.status == 200).then_some(())
        });
        let (status, answer) = lookup(replica, &[1]);
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer["results"][1]["values"][0], json!(4242.5));
    }
    assert!(metric(&first, "aurum_online_tier_reconnects_total") >= 1.0);

    // A change made behind aurum's back (no notice) stays unseen while L1
    // holds the row; once the subscription is lost and re-established, L1
    // has been emptied and the change shows.
    let (_, answer) = lookup(&first, &[1]);
    assert_eq!(answer["results"][1]["values"][0], json!(4242.5));
    let keys = cli(
        redis.port,
        None,
        &["--scan", "--pattern", &bucket_pattern("1")],
    );
    let key = keys
        .lines()
        .next()
        .expect("customer 1's bucket is in Redis");
    assert_eq!(cli(redis.port, None, &["HDEL", key, "1"]), "1");
    cli(redis.port, None, &["CLIENT", "KILL", "TYPE", "pubsub"]);
    eventually(
        "the replica to drop its L1 when its subscription was cut",
        || {
            let (_, answer) = lookup(&first, &[1]);
            (answer["results"][1]["statuses"][0] == "NOT_FOUND").then_some(())
        },
    );
}

/// Three `redis-server`s with cluster mode on, joined as three primaries
/// (no replicas).
fn start_cluster() -> Vec<Redis> {
    let nodes: Vec<Redis> = (0..3)
        .map(|_| Redis::start(&["--cluster-enabled", "yes", "--cluster-node-timeout", "2000"]))
        .collect();
    let addresses: Vec<String> = nodes
        .iter()
        .map(|n| format!("127.0.0.1:{}", n.port))
        .collect();
    let mut create = Command::new(redis_bin("redis-cli"));
    create
        .arg("--cluster")
        .arg("create")
        .args(&addresses)
        .args(["--cluster-replicas", "0", "--cluster-yes"]);
    let output = create.output().unwrap();
    assert!(
        output.status.success(),
        "redis-cli --cluster create: {}",
        String::from_utf8_lossy(&output.stdout)
    );
    eventually("the cluster to be ok", || {
        nodes
            .iter()
            .all(|n| cli(n.port, None, &["CLUSTER", "INFO"]).contains("cluster_state:ok"))
            .then_some(())
    });
    nodes
}

#[test]
fn a_three_master_cluster_serves_what_the_memory_store_does() {
    let project = example_project_event_windows("3000", "4");
    let dir = project.path();
    let nodes = start_cluster();
    let urls: Vec<String> = nodes.iter().map(Redis::url).collect();
    let server = serve_redis(dir, &urls.join(","), &["--redis-cluster"]);
    let memory = crate::server::start(dir);
    let customers: Vec<i64> = (1..=60).chain([999_999]).collect();
    let (_, expected) = lookup(&memory, &customers);
    let (status, answer) = lookup(&server, &customers);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answered(&answer), answered(&expected));
    // The rows are spread over the three masters.
    for node in &nodes {
        let keys: u64 = cli(node.port, None, &["DBSIZE"]).parse().unwrap();
        assert!(keys > 0, "node {} holds no rows", node.port);
    }
    // A second replica, its L1 warm, reads a push made through the first:
    // the notice reaches it through whichever node it subscribed to.
    let other = serve_redis(dir, &urls.join(","), &["--redis-cluster"]);
    lookup(&other, &[7]);
    let (status, pushed) = push_row(&server, 7, 77.0);
    assert_eq!(status, 200, "{pushed}");
    for replica in [&server, &other] {
        eventually("the pushed row on both replicas", || {
            let (_, answer) = lookup(replica, &[7]);
            (answer["results"][1]["values"][0] == json!(77.0)).then_some(())
        });
    }
    assert!(metric(&other, "aurum_online_tier_invalidations_total") >= 1.0);
}

#[test]
fn an_unreachable_or_refusing_redis_is_named_without_its_password() {
    let project = example_project_event_windows("500", "5");
    let dir = project.path();
    let closed = free_port();
    let output = Command::new(env!("CARGO_BIN_EXE_aurum"))
        .args([
            "serve",
            "--addr",
            "127.0.0.1:0",
            "--flight-addr",
            "127.0.0.1:0",
        ])
        .args(["--grpc-addr", "127.0.0.1:0", "--online-store", "redis"])
        .args(["--redis-timeout-ms", "300"])
        .env(
            "AURUM_REDIS_URL",
            format!("redis://user:hunter2@127.0.0.1:{closed}"),
        )
        .current_dir(dir)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains(&format!("127.0.0.1:{closed}")), "{stderr}");
    assert!(!stderr.contains("hunter2"), "{stderr}");

    let redis = Redis::start(&["--requirepass", "right-password"]);
    let output = Command::new(env!("CARGO_BIN_EXE_aurum"))
        .args([
            "serve",
            "--addr",
            "127.0.0.1:0",
            "--flight-addr",
            "127.0.0.1:0",
        ])
        .args(["--grpc-addr", "127.0.0.1:0", "--online-store", "redis"])
        .env(
            "AURUM_REDIS_URL",
            format!("redis://:wrong-password@127.0.0.1:{}", redis.port),
        )
        .current_dir(dir)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains(&format!("127.0.0.1:{}", redis.port)),
        "{stderr}"
    );
    assert!(!stderr.contains("wrong-password"), "{stderr}");

    // With the right password it serves (the backend chosen in aurum.toml
    // this time); a row another program wrote in a format it cannot read
    // is a named error, counted, never a crash.
    let file = dir.join("aurum.toml");
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(
        &file,
        format!("{text}\n[online_store]\nbackend = \"redis\"\n"),
    )
    .unwrap();
    let url = format!("redis://:right-password@127.0.0.1:{}", redis.port);
    let server = start_in_env(dir, &[], &[("AURUM_REDIS_URL", url.as_str())]);
    let health = call("GET", &format!("{}/metrics", server.url), None, None).text;
    assert!(
        health.contains("aurum_online_tier_up 1"),
        "served over Redis"
    );
    let keys = cli(
        redis.port,
        Some("right-password"),
        &["--scan", "--pattern", &bucket_pattern("3")],
    );
    let key = keys
        .lines()
        .next()
        .expect("customer 3's bucket is in Redis");
    cli(
        redis.port,
        Some("right-password"),
        &["HSET", key, "3", "garbage"],
    );
    let (status, answer) = lookup(&server, &[3]);
    assert_eq!(status, 500, "{answer}");
    assert_eq!(answer["error"]["code"], "online_tier_bad_value");
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("\"3\""),
        "{answer}"
    );
    assert_eq!(
        metric(&server, "aurum_online_tier_decode_errors_total"),
        1.0
    );
    let metrics = call("GET", &format!("{}/metrics", server.url), None, None).text;
    assert!(!metrics.contains("right-password"));
}

/// Rows never expire by themselves (Redis 7.0 has no expiry per hash
/// field): loads and writes record their view's TTL, and the sweep — by
/// any replica, even one that serves none of the views — deletes the rows
/// whose TTL ended longer ago than the grace (only those, only in its
/// namespace, never a view without a TTL), and tells the replicas.
#[test]
fn the_sweep_deletes_rows_past_their_ttl_and_its_grace() {
    let redis = Redis::start(&[]);
    bulk_load_and_sweep(&[&redis], false);
}

#[test]
fn a_cluster_is_swept_on_every_primary() {
    let nodes = start_cluster();
    let nodes: Vec<&Redis> = nodes.iter().collect();
    bulk_load_and_sweep(&nodes, true);
}

fn bulk_load_and_sweep(nodes: &[&Redis], cluster: bool) {
    use std::sync::Arc;

    use feature_store::online::OnlineRow;
    use feature_store::online::shared::{SharedTier, TierOptions, bucket_of};
    use feature_store::testing::{ViewFixture, gold_frame};
    use feature_store::{FeatureValue, FeatureView, OnlineStore};
    use polars::prelude::Column;

    // Whether Redis holds a row of the entity (in its bucket's hash).
    let stored = |namespace: &str, view: &str, entity: i64| -> bool {
        let bucket = bucket_of(&entity.to_string());
        let pattern = format!("aurum:{{{bucket:04x}}}:{namespace}:{view}:*");
        nodes.iter().any(|node| {
            cli(node.port, None, &["KEYS", &pattern])
                .lines()
                .any(|key| cli(node.port, None, &["HEXISTS", key, &entity.to_string()]) == "1")
        })
    };
    let staging_left = || {
        nodes
            .iter()
            .map(|node| cli(node.port, None, &["KEYS", "aurum:*:load-*"]))
            .collect::<String>()
    };
    let urls: Vec<String> = nodes.iter().map(|n| n.url()).collect();
    let hourly = ViewFixture::customer("hourly")
        .features(["x"])
        .float64()
        .ttl(Duration::from_secs(3_600))
        .build();
    let forever = ViewFixture::customer("forever")
        .features(["x"])
        .float64()
        .ttl(Duration::MAX)
        .build();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let connect = |namespace: &str, views: Vec<FeatureView>| {
            let urls = urls.clone();
            let namespace = namespace.to_string();
            async move {
                let tier = SharedTier::connect(TierOptions {
                    urls,
                    cluster,
                    namespace,
                    timeout: Duration::from_secs(5),
                })
                .await
                .unwrap();
                let store = Arc::new(OnlineStore::new(16 << 20));
                for view in views {
                    store.register_view(view);
                }
                store.attach_tier(tier).unwrap();
                store
            }
        };
        let both = || vec![hourly.clone(), forever.clone()];
        let stores = [
            connect("sweep", both()).await,
            connect("other", both()).await,
        ];
        let now = chrono::Utc::now().timestamp_micros();
        let hour = 3_600_000_000;
        // Customers 0..20 last seen two days ago (past the hour's TTL and
        // the day's grace after it), 20..40 three hours ago (past the TTL,
        // within the grace: they read OUTSIDE_MAX_AGE), 40..60 ten minutes
        // ago.
        let gold = |view: &FeatureView| {
            let events: Vec<i64> = (0..60)
                .map(|i| match i {
                    0..20 => now - 48 * hour,
                    20..40 => now - 3 * hour,
                    _ => now - hour / 6,
                })
                .collect();
            gold_frame(
                view,
                vec![Column::new(
                    "customer_id".into(),
                    (0..60i64).collect::<Vec<_>>(),
                )],
                events.clone(),
                events,
                vec![Column::new(
                    "x".into(),
                    (0..60).map(f64::from).collect::<Vec<_>>(),
                )],
            )
        };
        for store in &stores {
            for view in [&hourly, &forever] {
                let stats = store.load(view, &gold(view), 1).await.unwrap();
                assert_eq!(stats.written, 60);
            }
        }
        assert_eq!(
            staging_left(),
            "",
            "every staging hash was renamed into place"
        );
        assert!(stored("sweep", "hourly", 3) && stored("sweep", "hourly", 45));
        let pushed = OnlineRow {
            event_micros: now,
            created_micros: now,
            values: vec![FeatureValue::Float(1.0)].into_boxed_slice(),
        };
        assert_eq!(
            stores[0]
                .write("hourly", vec![("100".to_string(), pushed)])
                .await
                .unwrap(),
            1
        );
        assert!(stored("sweep", "hourly", 100), "a push");
        if cluster {
            // The rows are spread over the three primaries.
            for node in nodes {
                let keys: u64 = cli(node.port, None, &["DBSIZE"]).parse().unwrap();
                assert!(keys > 0, "node {} holds no rows", node.port);
            }
        }

        // A replica serving none of the views sweeps by the TTLs the loads
        // recorded.
        let bystander = connect("sweep", Vec::new()).await;
        assert_eq!(bystander.sweep_tier().await.unwrap(), 20);
        assert!(!stored("sweep", "hourly", 3), "past its TTL and the grace");
        assert!(stored("sweep", "hourly", 25), "within the grace");
        assert!(stored("sweep", "hourly", 45), "within its TTL");
        assert!(stored("sweep", "hourly", 100), "the push");
        assert!(stored("sweep", "forever", 3), "a view without a TTL");
        assert!(stored("other", "hourly", 3), "another namespace");
        // Again, by a replica that serves them: nothing left to do.
        assert_eq!(stores[0].sweep_tier().await.unwrap(), 0);

        // A newer row for customer 3 goes through the latest-wins script.
        let newer = OnlineRow {
            event_micros: now,
            created_micros: now,
            values: vec![FeatureValue::Float(-1.0)].into_boxed_slice(),
        };
        assert_eq!(
            stores[0]
                .write("hourly", vec![("3".to_string(), newer.clone())])
                .await
                .unwrap(),
            1
        );
        // An older one does not replace it.
        let older = OnlineRow {
            event_micros: now - hour,
            ..newer
        };
        assert_eq!(
            stores[0]
                .write("hourly", vec![("3".to_string(), older)])
                .await
                .unwrap(),
            0
        );

        // Two rows of one entity in one write: the newer stays, whichever
        // comes first (a row between the two is then refused).
        let at = |micros: i64, x: f64| OnlineRow {
            event_micros: micros,
            created_micros: micros,
            values: vec![FeatureValue::Float(x)].into_boxed_slice(),
        };
        assert_eq!(
            stores[0]
                .write(
                    "hourly",
                    vec![
                        ("7".to_string(), at(now + 10, 7.0)),
                        ("7".to_string(), at(now + 5, 8.0)),
                    ],
                )
                .await
                .unwrap(),
            1
        );
        assert_eq!(
            stores[0]
                .write("hourly", vec![("7".to_string(), at(now + 7, 9.0))])
                .await
                .unwrap(),
            0
        );

        // A second load of the same rows finds the buckets (merged row by
        // row, not renamed): every row but customers 3's and 7's newer ones
        // is written, the swept ones again.
        let stats = stores[0].load(&hourly, &gold(&hourly), 2).await.unwrap();
        assert_eq!(stats.written, 58, "all but customers 3 and 7");
        assert!(stored("sweep", "hourly", 5));
        assert_eq!(staging_left(), "", "merged staging hashes are deleted");
    });
}

/// Request-time windows over a Kafka source, several replicas over one
/// Redis: the replica that streams appends each hand-off of events to the
/// tier's events feed, and every replica applies the feed to its tiles. A
/// replica that does not stream, one started later (caught up from bronze
/// and the feed) and a streaming replica that replaces one killed by
/// `kill -9` (re-reading what was not committed) all count each event once.
#[test]
fn replicas_serve_the_windows_of_events_another_replica_streamed() {
    use crate::stream::{Broker, stream_project};
    let redis = Redis::start(&[]);
    let broker = Broker::start();
    broker.create_topic("payments", 2);
    let project = stream_project(&broker.bootstrap(), "payments", "");
    let dir = project.path();
    crate::stream::windows_at_request(dir);
    let file = dir.join("aurum.toml");
    // The first streaming replica publishes events but lands none in
    // bronze before it is killed: its commit waits ten minutes.
    let with_interval = |interval: &str| {
        let text = std::fs::read_to_string(&file).unwrap();
        let at = text.find("commit_interval = ").unwrap();
        let end = at + text[at..].find('\n').unwrap();
        let text = format!(
            "{}commit_interval = \"{interval}\"{}",
            &text[..at],
            &text[end..]
        );
        std::fs::write(&file, text).unwrap();
    };
    with_interval("10m");
    let mut streaming = serve_redis(dir, &redis.url(), &["--stream"]);
    let follower = serve_redis(dir, &redis.url(), &[]);
    let customers: Vec<String> = (0..97).map(|c| format!("c{c}")).collect();
    let read = |server: &Server| -> Value {
        let (status, answer) = post(
            &format!("{}/get-online-features", server.url),
            &json!({
                "entities": {"customer_id": customers},
                "features": ["customer_payments:amount_count_1h", "customer_payments:amount_sum_1h"],
            }),
        );
        assert_eq!(status, 200, "{answer}");
        answered(&answer)
    };
    let counted = |answer: &Value| -> f64 {
        answer[1]["values"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(Value::as_f64)
            .sum()
    };
    let all_count = |servers: &[&Server], expected: f64| {
        poll(
            // A successor waits out the dead consumer's session.
            Duration::from_secs(120),
            Duration::from_millis(50),
            || {
                servers
                    .iter()
                    .all(|s| counted(&read(s)) == expected)
                    .then_some(())
            },
            || {
                let counts: Vec<f64> = servers.iter().map(|s| counted(&read(s))).collect();
                format!("the replicas' windows count {counts:?} events, not {expected}")
            },
        );
    };

    broker.produce_live("payments", 0, 500, -1);
    all_count(&[&streaming, &follower], 500.0);
    assert_eq!(read(&streaming), read(&follower));
    assert!(metric(&streaming, "aurum_online_tier_events_published_total") >= 1.0);
    assert!(metric(&follower, "aurum_online_tier_feed_entries_read_total") >= 1.0);

    // The streaming replica dies before landing anything; another takes
    // the partitions over from what bronze holds (nothing) and publishes
    // every event again: no replica counts one twice.
    broker.produce_live("payments", 500, 200, -1);
    all_count(&[&streaming, &follower], 700.0);
    assert_eq!(
        metric(
            &streaming,
            "aurum_stream_events_landed_total{source=\"payments\"}"
        ),
        0.0,
        "the first replica landed events before it was killed"
    );
    streaming.child.kill().unwrap(); // SIGKILL
    let _ = streaming.child.wait();
    with_interval("200ms");
    let successor = serve_redis(dir, &redis.url(), &["--stream"]);
    poll(
        Duration::from_secs(120),
        Duration::from_millis(100),
        || {
            (metric(
                &successor,
                "aurum_stream_events_landed_total{source=\"payments\"}",
            ) == 700.0)
                .then_some(())
        },
        || "the successor to land the 700 events".to_string(),
    );
    all_count(&[&successor, &follower], 700.0);
    assert_eq!(
        metric(
            &follower,
            "aurum_window_events_applied_total{view=\"customer_payments\"}"
        ),
        700.0,
        "each event applied once"
    );
    // A replica started now loads silver (none yet: the pipeline has not
    // run), catches up from bronze and reads the feed beyond it.
    let joined = serve_redis(dir, &redis.url(), &[]);
    all_count(&[&successor, &follower, &joined], 700.0);
    assert_eq!(read(&follower), read(&joined));
    assert_eq!(read(&successor), read(&joined));
    // amounts are event id / 100: 0.00 + 0.01 + ... + 6.99.
    let sum: f64 = read(&joined)[2]["values"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_f64)
        .sum();
    assert!((sum - 2446.5).abs() < 1e-6, "sum {sum}");
}
