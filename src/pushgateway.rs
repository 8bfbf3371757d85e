//! Batch runs' metrics to a Prometheus Pushgateway (`--pushgateway URL`):
//! what a run did, in the text exposition format, `PUT` under
//! `/metrics/job/<job>/project/<name>` so each run replaces the last one's
//! group. A Pushgateway that cannot be reached or refuses the push is a
//! warning: the run's own result stands.

use std::fmt::Write as _;
use std::time::Duration;

use feature_store::pipeline::PipelineReport;

/// Metrics in the text exposition format, family by family.
#[derive(Default)]
pub(crate) struct Exposition(String);

impl Exposition {
    /// A gauge family: its help, then one sample per label set.
    pub(crate) fn gauge<'a>(
        &mut self,
        name: &str,
        help: &str,
        samples: impl IntoIterator<Item = (Vec<(&'a str, &'a str)>, f64)>,
    ) {
        let _ = writeln!(self.0, "# HELP {name} {help}\n# TYPE {name} gauge");
        for (labels, value) in samples {
            let labels: Vec<String> = labels
                .iter()
                .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
                .collect();
            if labels.is_empty() {
                let _ = writeln!(self.0, "{name} {value}");
            } else {
                let _ = writeln!(self.0, "{name}{{{}}} {value}", labels.join(","));
            }
        }
    }

    pub(crate) fn text(&self) -> &str {
        &self.0
    }
}

fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// What a pipeline run did (`succeeded`: false when a quality gate held
/// gold), as metrics.
pub(crate) fn pipeline_metrics(report: &PipelineReport, succeeded: bool) -> Exposition {
    let mut out = Exposition::default();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    out.gauge(
        "aurum_pipeline_run_success",
        "1 when the last pipeline run advanced every table, 0 when a quality gate held gold or it failed.",
        [(vec![], f64::from(u8::from(succeeded)))],
    );
    out.gauge(
        "aurum_pipeline_run_timestamp_seconds",
        "When the last pipeline run ended (seconds since the epoch).",
        [(vec![], now)],
    );
    out.gauge(
        "aurum_pipeline_run_duration_seconds",
        "How long the last pipeline run took.",
        [(vec![], report.seconds)],
    );
    let mut rows = Vec::new();
    for s in &report.sources {
        let source = s.source.as_str();
        rows.push((
            vec![("table", source), ("stage", "bronze"), ("kind", "out")],
            s.bronze_rows as f64,
        ));
        rows.push((
            vec![("table", source), ("stage", "silver"), ("kind", "in")],
            s.silver_rows_in as f64,
        ));
        rows.push((
            vec![("table", source), ("stage", "silver"), ("kind", "out")],
            s.silver_rows_out as f64,
        ));
        rows.push((
            vec![
                ("table", source),
                ("stage", "silver"),
                ("kind", "quarantined"),
            ],
            s.quarantined as f64,
        ));
    }
    for v in &report.views {
        rows.push((
            vec![
                ("table", v.view.as_str()),
                ("stage", "gold"),
                ("kind", "out"),
            ],
            v.rows as f64,
        ));
    }
    out.gauge(
        "aurum_pipeline_rows",
        "Rows the last pipeline run read and wrote, per stage (source tables by source name, gold by view).",
        rows,
    );
    out.gauge(
        "aurum_pipeline_quality_score",
        "The last silver batch's quality score, per source.",
        report
            .sources
            .iter()
            .filter(|s| s.silver_rows_in > 0)
            .map(|s| (vec![("source", s.source.as_str())], s.quality_score)),
    );
    out.gauge(
        "aurum_quality_gate_failed",
        "1 when the last run's batch failed a quality gate, per source, view (* for the source's own) and check.",
        report.sources.iter().flat_map(|s| {
            s.gate_checks.iter().map(move |c| {
                (
                    vec![
                        ("source", s.source.as_str()),
                        ("view", c.view.as_deref().unwrap_or("*")),
                        ("check", c.check),
                    ],
                    f64::from(u8::from(!c.passed)),
                )
            })
        }),
    );
    out
}

/// A pipeline run that failed before it could report: success 0 and when.
pub(crate) fn pipeline_failure_metrics() -> Exposition {
    let mut out = Exposition::default();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    out.gauge(
        "aurum_pipeline_run_success",
        "1 when the last pipeline run advanced every table, 0 when a quality gate held gold or it failed.",
        [(vec![], 0.0)],
    );
    out.gauge(
        "aurum_pipeline_run_timestamp_seconds",
        "When the last pipeline run ended (seconds since the epoch).",
        [(vec![], now)],
    );
    out
}

/// What `aurum materialize` loaded (the server's per-view reports) in
/// `seconds`, as metrics.
pub(crate) fn materialize_metrics(views: &[serde_json::Value], seconds: f64) -> Exposition {
    let mut out = Exposition::default();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    out.gauge(
        "aurum_materialize_run_timestamp_seconds",
        "When the last materialization ended (seconds since the epoch).",
        [(vec![], now)],
    );
    out.gauge(
        "aurum_materialize_run_duration_seconds",
        "How long the last materialization took.",
        [(vec![], seconds)],
    );
    let view = |v: &serde_json::Value| v["view"].as_str().unwrap_or("").to_string();
    let names: Vec<String> = views.iter().map(view).collect();
    let mut rows = Vec::new();
    for (v, name) in views.iter().zip(&names) {
        for (kind, key) in [
            ("read", "rows_read"),
            ("written", "written"),
            ("older_ignored", "skipped_older"),
        ] {
            rows.push((
                vec![("view", name.as_str()), ("kind", kind)],
                v[key].as_f64().unwrap_or(0.0),
            ));
        }
    }
    out.gauge(
        "aurum_materialize_rows",
        "Gold rows the last materialization read, wrote online, and ignored as older than the online value, per view.",
        rows,
    );
    out.gauge(
        "aurum_materialize_gold_version",
        "The gold version each view's online values now come from.",
        views.iter().zip(&names).filter_map(|(v, name)| {
            Some((vec![("view", name.as_str())], v["to_version"].as_f64()?))
        }),
    );
    out
}

/// What one `aurum train` (or `retrain`) job did, as metrics: `None` for
/// a skipped job's report.
pub(crate) fn train_metrics(report: Option<&training::job::Report>) -> Exposition {
    let mut out = Exposition::default();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    out.gauge(
        "aurum_train_run_timestamp_seconds",
        "When the model's last training job ended (seconds since the epoch).",
        [(vec![], now)],
    );
    out.gauge(
        "aurum_train_skipped",
        "1 when the last job found nothing new to learn from.",
        [(vec![], f64::from(u8::from(report.is_none())))],
    );
    let Some(report) = report else {
        return out;
    };
    out.gauge(
        "aurum_train_registered_version",
        "The version the last job registered.",
        [(vec![], report.version as f64)],
    );
    out.gauge(
        "aurum_train_promoted",
        "1 when the last job moved champion to its version.",
        [(vec![], f64::from(u8::from(report.promoted.0)))],
    );
    out.gauge(
        "aurum_train_rows",
        "Rows the last job trained and validated on.",
        [
            (vec![("set", "train")], report.rows.0 as f64),
            (vec![("set", "validation")], report.rows.1 as f64),
        ],
    );
    out.gauge(
        "aurum_train_validation_metric",
        "The last job's validation metrics.",
        report
            .metrics
            .iter()
            .filter(|(_, v)| v.is_finite())
            .map(|(name, v)| (vec![("metric", name.as_str())], *v)),
    );
    out.gauge(
        "aurum_train_stage_seconds",
        "How long each step of the last job took.",
        report
            .stages
            .iter()
            .map(|(stage, seconds)| (vec![("stage", *stage)], *seconds)),
    );
    out
}

/// Pushes `metrics` to the Pushgateway at `url` as job `job` under the
/// grouping key `groups` (label, value pairs); a failure is a warning
/// naming the gateway (without user information or query) and the reason,
/// never an error of the run.
pub(crate) async fn push(
    url: &str,
    job: &str,
    groups: &[(&str, &str)],
    metrics: &Exposition,
) -> bool {
    let shown = shown(url);
    let mut target = format!("{}/metrics/job/{job}", url.trim_end_matches('/'));
    for (label, value) in groups {
        target.push_str(&format!("/{label}/{}", path_segment(value)));
    }
    let outcome = async {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| e.without_url().to_string())?;
        let response = client
            .put(&target)
            .header("content-type", "text/plain; version=0.0.4")
            .body(metrics.text().to_string())
            .send()
            .await
            .map_err(|e| e.without_url().to_string())?;
        if response.status().is_success() {
            Ok(())
        } else {
            let status = response.status();
            let body = response.text().await.unwrap_or_default();
            Err(format!("it answered {status}: {}", body.trim()))
        }
    }
    .await;
    match outcome {
        Ok(()) => true,
        Err(reason) => {
            eprintln!(
                "warning: the run's metrics were not pushed to the Pushgateway at {shown} ({reason}); the run's result stands"
            );
            false
        }
    }
}

/// A grouping value as one path segment.
fn path_segment(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// `url` without user information or query, for messages.
fn shown(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) => {
            let _ = parsed.set_username("");
            let _ = parsed.set_password(None);
            parsed.set_query(None);
            parsed.to_string()
        }
        Err(_) => "(an unparseable URL)".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_escaped_and_urls_lose_their_secrets() {
        let mut out = Exposition::default();
        out.gauge("m", "help", [(vec![("a", "x\"y\\z")], 1.5)]);
        assert_eq!(
            out.text(),
            "# HELP m help\n# TYPE m gauge\nm{a=\"x\\\"y\\\\z\"} 1.5\n"
        );
        assert_eq!(
            shown("https://user:secret@push.example:9091/?token=abc"),
            "https://push.example:9091/"
        );
        assert_eq!(path_segment("my shop/eu"), "my_shop_eu");
    }
}
