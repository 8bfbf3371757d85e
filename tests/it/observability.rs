//! The dashboards and alert rules in `observability/`, against the real
//! thing: `promtool` checks the rules and runs their unit tests (each alert
//! firing within a minute of its condition), and a Prometheus from Debian's
//! package (`make prometheus`) scrapes a running `aurum serve` that has
//! served predictions, online features, feedback and drift evaluations —
//! then every Grafana panel's query and every alert's expression must
//! return series, and every rule must evaluate healthy.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use serde_json::{Value, json};

use crate::cli::ok;
use crate::python::workspace;
use crate::server::{block_on, call, eventually, free_port, start_with};

fn prometheus_bin(name: &str) -> PathBuf {
    let bin = workspace().join(".tools/prometheus/usr/bin").join(name);
    assert!(
        bin.is_file(),
        "{} is missing: run `make prometheus` (or `make test`, which does)",
        bin.display()
    );
    bin
}

fn observability() -> PathBuf {
    workspace().join("observability")
}

#[test]
fn the_alert_rules_pass_promtool_and_their_unit_tests() {
    let rules = observability().join("prometheus");
    for args in [
        vec!["check", "rules", "aurum-alerts.yml"],
        vec!["test", "rules", "aurum-alerts-test.yml"],
    ] {
        let out = Command::new(prometheus_bin("promtool"))
            .args(&args)
            .current_dir(&rules)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "promtool {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// A Prometheus scraping one target every second, with aurum's alert
/// rules loaded; killed when dropped.
struct Prometheus {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prometheus {
    fn start(target: &str) -> Prometheus {
        let dir = tempfile::tempdir().unwrap();
        let rules = observability().join("prometheus/aurum-alerts.yml");
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             rule_files:\n  - {}\n\
             scrape_configs:\n  - job_name: aurum\n    static_configs:\n      - targets: ['{target}']\n",
            rules.display()
        );
        std::fs::write(dir.path().join("prometheus.yml"), config).unwrap();
        // A free loopback port (taken, then let go).
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(prometheus_bin("prometheus"))
            .arg(format!(
                "--config.file={}",
                dir.path().join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting Prometheus");
        let url = format!("http://127.0.0.1:{port}");
        let prometheus = Prometheus {
            child,
            url,
            _dir: dir,
        };
        eventually("Prometheus to be ready", || {
            block_on(async {
                let answer = reqwest::get(format!("{}/-/ready", prometheus.url))
                    .await
                    .ok()?;
                answer.status().is_success().then_some(())
            })
        });
        prometheus
    }

    /// An instant query's result (the `data.result` array).
    fn query(&self, expr: &str) -> Vec<Value> {
        let url = format!("{}/api/v1/query", self.url);
        let answer: Value = block_on(async {
            reqwest::Client::new()
                .get(url)
                .query(&[("query", expr)])
                .send()
                .await
                .expect("querying Prometheus")
                .json()
                .await
                .expect("Prometheus answers JSON")
        });
        assert_eq!(answer["status"], "success", "{expr}: {answer}");
        answer["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    fn get(&self, path: &str) -> Value {
        block_on(async {
            reqwest::get(format!("{}{path}", self.url))
                .await
                .unwrap()
                .json()
                .await
                .unwrap()
        })
    }
}

/// Every panel query of the Grafana dashboards, with their variables set
/// to "all" and the rate interval to a minute: (dashboard, panel, expr).
fn panel_queries(dir: &Path) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    assert_eq!(files.len(), 4, "the four dashboards: {files:?}");
    for file in files {
        let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap())
            .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        assert!(dashboard["uid"].is_string() && dashboard["title"].is_string());
        for panel in dashboard["panels"].as_array().unwrap() {
            for target in panel["targets"].as_array().unwrap() {
                let expr = target["expr"]
                    .as_str()
                    .unwrap()
                    .replace("$__rate_interval", "1m")
                    .replace("$instance", ".*")
                    .replace("$model", ".*");
                out.push((
                    dashboard["title"].as_str().unwrap().to_string(),
                    panel["title"].as_str().unwrap().to_string(),
                    expr,
                ));
            }
        }
    }
    out
}

/// Every alert's expression without its threshold (the series it compares),
/// with the alert's name.
fn alert_inputs() -> Vec<(String, String)> {
    let text =
        std::fs::read_to_string(observability().join("prometheus/aurum-alerts.yml")).unwrap();
    let mut out = Vec::new();
    let mut name = None;
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        let line = line.trim();
        if let Some(alert) = line.strip_prefix("- alert: ") {
            name = Some(alert.to_string());
        }
        let Some(rest) = line.strip_prefix("expr:") else {
            continue;
        };
        let mut expr = rest.trim().to_string();
        if expr == "|" {
            expr.clear();
            while let Some(next) = lines.peek() {
                if next.trim_start().starts_with("for:") || next.trim_start().starts_with("labels:")
                {
                    break;
                }
                expr.push_str(next.trim());
                expr.push(' ');
                lines.next();
            }
        }
        // The comparison is the expression's last operator.
        let input = ["==", "<", ">"]
            .iter()
            .filter_map(|op| expr.rfind(op))
            .max()
            .map_or(expr.as_str(), |at| &expr[..at])
            .trim()
            .to_string();
        out.push((name.clone().expect("an alert before its expr"), input));
    }
    assert_eq!(out.len(), 14, "every alert's expression: {out:#?}");
    out
}

#[test]
fn every_dashboard_panel_and_alert_returns_series_from_a_real_prometheus() {
    let project = tempfile::tempdir().unwrap();
    let dir = project.path();
    ok(dir, &["init", "."]);
    ok(dir, &["generate", "--rows", "2000", "--seed", "5"]);
    // A quality gate the batch meets, so the gate series exist (at 0).
    let file = dir.join("aurum.toml");
    let text = std::fs::read_to_string(&file).unwrap().replacen(
        "[[feature_view]]",
        "[source.quality_gate]\nmin_score = 0.5\n\n[[feature_view]]",
        1,
    );
    std::fs::write(&file, text).unwrap();
    ok(dir, &["pipeline"]);
    ok(dir, &["train", "--promote-if-better"]);
    let server = start_with(
        dir,
        &[
            "--drift-interval-s",
            "1",
            "--drift-min-rows",
            "20",
            "--prediction-log-flush-ms",
            "100",
            "--table-metrics-interval-s",
            "1",
        ],
    );
    let url = server.url.clone();
    let target = url.trim_start_matches("http://").to_string();
    let prometheus = Prometheus::start(&target);

    // Traffic of every kind the dashboards show.
    let mut served = Vec::new();
    for customer in 1..=40 {
        let body = json!({"model": "fraud", "entities": {"customer_id": [customer]}});
        let reply = call("POST", &format!("{url}/predict"), Some(&body), None);
        assert_eq!(reply.status, 200, "{}", reply.text);
        let prediction = reply.json()["predictions"][0]["prediction"]
            .as_f64()
            .unwrap();
        served.push((reply.request_id, prediction));
        let online = json!({
            "features": ["customer_features:amount_sum_7d"],
            "entities": {"customer_id": [customer]},
        });
        assert_eq!(
            call(
                "POST",
                &format!("{url}/get-online-features"),
                Some(&online),
                None
            )
            .status,
            200
        );
    }
    let bad = call(
        "POST",
        &format!("{url}/predict"),
        Some(&json!({"model": 1})),
        None,
    );
    assert_eq!(bad.status, 422);
    // Outcomes of both classes, so the live quality gauges have values.
    let outcomes: Vec<Value> = served
        .iter()
        .enumerate()
        .map(|(i, (id, p))| {
            let said = f64::from(u8::from(*p >= 0.5));
            let truth = if i % 3 == 0 { 1.0 - said } else { said };
            json!({"request_id": id, "outcome": truth})
        })
        .collect();
    let reply = call(
        "POST",
        &format!("{url}/feedback"),
        Some(&json!({"outcomes": outcomes})),
        None,
    );
    assert_eq!(reply.status, 200, "{}", reply.text);
    eventually("the drift and quality gauges on /metrics", || {
        let metrics = call("GET", &format!("{url}/metrics"), None, None).text;
        (metrics.contains("aurum_drift_share{") && metrics.contains("aurum_model_roc_auc{"))
            .then_some(())
    });

    let panels = panel_queries(&observability().join("grafana/dashboards"));
    assert!(panels.len() >= 40, "{} panel queries", panels.len());
    for (dashboard, panel, expr) in &panels {
        eventually(&format!("{dashboard} / {panel}: {expr}"), || {
            (!prometheus.query(expr).is_empty()).then_some(())
        });
    }
    for (alert, input) in alert_inputs() {
        eventually(&format!("alert {alert}: {input}"), || {
            (!prometheus.query(&input).is_empty()).then_some(())
        });
    }
    // Prometheus evaluated every rule on the live series without error.
    let rules = prometheus.get("/api/v1/rules");
    let groups = rules["data"]["groups"].as_array().unwrap();
    let evaluated: Vec<&Value> = groups
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap())
        .collect();
    assert_eq!(evaluated.len(), 14, "{rules}");
    for rule in evaluated {
        assert_eq!(rule["health"], "ok", "{rule}");
    }
}

/// A Pushgateway on a loopback port; killed when dropped.
struct Pushgateway {
    child: Child,
    url: String,
}

impl Drop for Pushgateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_pipeline_run_pushes_its_metrics_to_a_real_pushgateway() {
    let port = free_port();
    let state = tempfile::tempdir().unwrap();
    let gateway = Pushgateway {
        child: Command::new(prometheus_bin("prometheus-pushgateway"))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg(format!(
                "--persistence.file={}",
                state.path().join("pushgateway.data").display()
            ))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting the Pushgateway"),
        url: format!("http://127.0.0.1:{port}"),
    };
    let scrape = || {
        block_on(async {
            reqwest::get(format!("{}/metrics", gateway.url))
                .await
                .ok()?
                .text()
                .await
                .ok()
        })
    };
    eventually("the Pushgateway to answer", scrape);

    let project = tempfile::tempdir().unwrap();
    let dir = project.path();
    ok(dir, &["init", "."]);
    ok(dir, &["generate", "--rows", "2000", "--seed", "3"]);
    // A gate the batch (quality 0.999) fails: the run fails, and still
    // pushes what it did.
    let file = dir.join("aurum.toml");
    let text = std::fs::read_to_string(&file).unwrap().replacen(
        "[[feature_view]]",
        "[source.quality_gate]\nmin_score = 0.9995\n\n[[feature_view]]",
        1,
    );
    std::fs::write(&file, &text).unwrap();
    let failed = crate::cli::run(dir, &["pipeline", "--pushgateway", &gateway.url]);
    assert!(!failed.status.success());
    let metrics = scrape().unwrap();
    let has = |metrics: &str, series: &str, value: &str| {
        metrics.lines().any(|l| {
            l.starts_with(series.split('{').next().unwrap())
                && l.contains("job=\"aurum_pipeline\"")
                && series
                    .split(['{', '}', ','])
                    .skip(1)
                    .filter(|p| !p.is_empty())
                    .all(|label| l.contains(label))
                && l.ends_with(&format!(" {value}"))
        })
    };
    assert!(
        has(&metrics, "aurum_pipeline_run_success", "0"),
        "{metrics}"
    );
    assert!(
        has(
            &metrics,
            "aurum_quality_gate_failed{source=\"transactions\",view=\"*\",check=\"min_score\"}",
            "1"
        ),
        "{metrics}"
    );
    assert!(
        has(
            &metrics,
            "aurum_pipeline_rows{table=\"transactions\",stage=\"silver\",kind=\"quarantined\"}",
            "2"
        ),
        "{metrics}"
    );

    // Under a gate it meets, the next run pushes its success over the last.
    std::fs::write(
        &file,
        text.replace("min_score = 0.9995", "min_score = 0.99"),
    )
    .unwrap();
    ok(dir, &["pipeline", "--pushgateway", &gateway.url]);
    let metrics = scrape().unwrap();
    assert!(
        has(&metrics, "aurum_pipeline_run_success", "1"),
        "{metrics}"
    );
    let gold_rows = metrics
        .lines()
        .find(|l| {
            l.starts_with("aurum_pipeline_rows{")
                && l.contains("table=\"customer_features\"")
                && l.contains("stage=\"gold\"")
        })
        .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok());
    assert!(gold_rows.is_some_and(|n| n > 0.0), "{metrics}");

    // `aurum materialize` pushes what the server loaded.
    let server = start_with(dir, &[]);
    ok(
        dir,
        &[
            "materialize",
            "--server",
            &server.url,
            "--pushgateway",
            &gateway.url,
        ],
    );
    let metrics = scrape().unwrap();
    let materialized = metrics.lines().any(|l| {
        l.starts_with("aurum_materialize_rows{")
            && l.contains("job=\"aurum_materialize\"")
            && l.contains("view=\"customer_features\"")
            && l.contains("kind=\"read\"")
            && l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()) == gold_rows
    });
    assert!(materialized, "{metrics}");
    drop(server);

    // `aurum train` pushes each job's outcome.
    ok(dir, &["train", "--pushgateway", &gateway.url]);
    let metrics = scrape().unwrap();
    let trained = metrics.lines().any(|l| {
        l.starts_with("aurum_train_registered_version{")
            && l.contains("job=\"aurum_train\"")
            && l.contains("model=\"fraud\"")
            && l.ends_with(" 1")
    });
    assert!(trained, "{metrics}");
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("aurum_train_validation_metric{")
                && l.contains("model=\"fraud\"")),
        "{metrics}"
    );

    // A Pushgateway that is not there: a warning, and the run succeeds.
    let gone = format!("http://user:secret@127.0.0.1:{}/", free_port());
    let out = crate::cli::run(dir, &["pipeline", "--pushgateway", &gone]);
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(
            "warning: the run's metrics were not pushed to the Pushgateway at http://127.0.0.1:"
        ),
        "{stderr}"
    );
    assert!(!stderr.contains("secret"), "{stderr}");
}
