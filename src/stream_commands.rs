//! `aurum stream`: land the project's Kafka sources in bronze until
//! stopped (SIGINT/SIGTERM land what is in memory first).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use feature_store::project::Format;
use stream::{StreamOptions, StreamStats};

use crate::project_commands::ProjectArg;

/// Options of `aurum stream`.
#[derive(Debug, clap::Args)]
pub struct StreamArgs {
    #[command(flatten)]
    project: ProjectArg,
    /// Only this source (default: every Kafka source of the project).
    #[arg(long)]
    source: Vec<String>,
    /// Stop once caught up: every event received has landed and none
    /// arrived for this long (e.g. `5s`). Without it the stream runs until
    /// SIGINT or SIGTERM.
    #[arg(long, value_name = "DURATION", value_parser = parse_idle)]
    exit_when_idle: Option<Duration>,
    /// Print the final report as JSON on stdout.
    #[arg(long)]
    json: bool,
}

fn parse_idle(text: &str) -> Result<Duration, String> {
    if let Some(ms) = text.strip_suffix("ms") {
        return ms
            .parse::<u64>()
            .map(Duration::from_millis)
            .map_err(|_| format!("{text:?} is not a duration (e.g. 500ms, 5s)"));
    }
    feature_store::project::parse_duration(text)
        .ok_or_else(|| format!("{text:?} is not a duration (e.g. 500ms, 5s)"))
}

/// Runs `aurum stream`.
pub async fn run(args: StreamArgs) -> Result<()> {
    let project = args.project.load()?;
    let sources: Vec<_> = project
        .sources
        .iter()
        .filter(|s| s.format == Format::Kafka)
        .filter(|s| args.source.is_empty() || args.source.contains(&s.name))
        .cloned()
        .collect();
    if sources.is_empty() {
        bail!(
            "no Kafka source to stream{} (a source with format = \"kafka\" and a [source.kafka] table)",
            if args.source.is_empty() {
                String::new()
            } else {
                format!(" named {}", args.source.join(", "))
            }
        );
    }
    let store = project.delta_store()?;
    let stop = Arc::new(AtomicBool::new(false));
    let run_id = format!("stream-{}", chrono::Utc::now().format("%Y%m%dT%H%M%S%.6fZ"));
    let mut consumers = Vec::new();
    for source in &sources {
        let stats = Arc::new(StreamStats::default());
        let options = StreamOptions {
            on_received: None,
            exit_when_idle: args.exit_when_idle,
            run_id: run_id.clone(),
            default_group: format!("aurum.{}.{}", project.name, source.name),
        };
        let (store, source_spec, stop, stats_for_run) =
            (store.clone(), source.clone(), stop.clone(), stats.clone());
        let runtime = tokio::runtime::Handle::current();
        let task = tokio::task::spawn_blocking(move || {
            let outcome = stream::run(store, &source_spec, &options, &stop, stats_for_run, runtime);
            if outcome.is_err() {
                // One failed source stops the others (they land first).
                stop.store(true, Ordering::Relaxed);
            }
            outcome
        });
        consumers.push((source.clone(), stats, task));
    }
    let stopper = stop.clone();
    tokio::spawn(async move {
        crate::serve::shutdown_signal().await;
        stopper.store(true, Ordering::Relaxed);
    });
    // Progress: one line per source every few seconds on stderr.
    let watched: Vec<(String, String, Arc<StreamStats>)> = consumers
        .iter()
        .filter_map(|(s, stats, _)| {
            Some((
                s.name.clone(),
                s.kafka.as_ref()?.topic.clone(),
                stats.clone(),
            ))
        })
        .collect();
    let quiet = args.json;
    let reporter = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        tick.tick().await;
        loop {
            tick.tick().await;
            if quiet {
                continue;
            }
            for (source, topic, stats) in &watched {
                let r = stats.report(source, topic);
                let lag: i64 = r.lag.values().sum();
                eprintln!(
                    "stream {source} ({topic}): {} landed, {} undecodable, {} commits, lag {lag}",
                    r.landed, r.undecodable, r.commits
                );
            }
        }
    });
    let mut reports = Vec::new();
    let mut failure = None;
    for (source, stats, task) in consumers {
        let outcome = task.await.context("the stream thread")?;
        let topic = source
            .kafka
            .as_ref()
            .map(|k| k.topic.clone())
            .unwrap_or_default();
        if let Err(e) = outcome {
            failure.get_or_insert(e);
        }
        reports.push(stats.report(&source.name, &topic));
    }
    reporter.abort();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&reports)?);
    } else {
        for r in &reports {
            eprintln!(
                "stream {} ({}): {} events landed ({} undecodable, quarantined by the pipeline), {} already in bronze skipped, {} offsets skipped by the brokers, {} commits",
                r.source,
                r.topic,
                r.landed,
                r.undecodable,
                r.already_landed,
                r.skipped_offsets,
                r.commits
            );
        }
    }
    if let Some(e) = failure {
        return Err(e.into());
    }
    Ok(())
}

/// The streams `aurum serve --stream` runs: each Kafka source lands in
/// bronze exactly as `aurum stream` lands it, and the events received,
/// cleaned in memory by the source's silver rules (the step `aurum
/// pipeline` runs on the same rows), are added to the window tiles of the
/// request-time views over the source within milliseconds, before their
/// bronze commit — each offset once, however often it is read.
pub(crate) struct ServerStreams {
    stop: Arc<AtomicBool>,
    tasks: Vec<(String, tokio::task::JoinHandle<stream::Result<()>>)>,
    /// Each source's status, for `/metrics` and `/health/ready`.
    pub statuses: Vec<serving::state::StreamStatus>,
}

/// Every replica over a shared online tier follows its events feed: the
/// window tiles of each Kafka source's request-time views get the events
/// whichever replica consumed them ([`stream::tiles::TilesFeed::follow`]).
pub(crate) struct FeedFollowers {
    stop: Arc<AtomicBool>,
    /// Each followed source's feed (the streaming consumer of the source
    /// publishes through it).
    feeds: std::collections::BTreeMap<String, (Arc<stream::tiles::TilesFeed>, Arc<StreamStats>)>,
}

impl Drop for FeedFollowers {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The run id of the server's cleaning of received events.
fn server_run_id() -> String {
    format!(
        "serve-stream-{}",
        chrono::Utc::now().format("%Y%m%dT%H%M%S%.6fZ")
    )
}

/// A window tiles' feed of `source`, caught up with what bronze gained
/// after the silver version the tiles were loaded from (an earlier run's
/// events, or another replica's).
async fn caught_up_feed(
    project: &feature_store::Project,
    source: &feature_store::project::Source,
    online: &Arc<feature_store::OnlineStore>,
    store: &delta::DeltaStore,
    run_id: &str,
) -> Result<(Arc<stream::tiles::TilesFeed>, Arc<StreamStats>)> {
    let dimensions = feature_store::pipeline::silver_step::dimensions(store, project, source)
        .await
        .with_context(|| format!("reading the enrichment tables of source {}", source.name))?;
    let stats = Arc::new(StreamStats::default());
    let feed = Arc::new(stream::tiles::TilesFeed::new(
        project,
        source,
        dimensions,
        online.clone(),
        run_id,
        stats.clone(),
    ));
    feed.catch_up(store).await?;
    Ok((feed, stats))
}

/// With a shared online tier, starts a follower of the events feed for
/// every Kafka source with request-time views (`None` without a tier).
pub(crate) async fn follow_in_server(
    project: &feature_store::Project,
    online: Arc<feature_store::OnlineStore>,
) -> Result<Option<FeedFollowers>> {
    if online.tier().is_none() {
        return Ok(None);
    }
    let store = project.delta_store()?;
    let run_id = server_run_id();
    let mut followers = FeedFollowers {
        stop: Arc::new(AtomicBool::new(false)),
        feeds: std::collections::BTreeMap::new(),
    };
    for source in project.sources.iter().filter(|s| s.format == Format::Kafka) {
        let windowed = project
            .feature_views
            .iter()
            .any(|v| v.source == source.name && v.request_windows().is_some());
        if !windowed {
            continue;
        }
        let (feed, stats) = caught_up_feed(project, source, &online, &store, &run_id).await?;
        tokio::spawn(feed.clone().follow(followers.stop.clone()));
        followers.feeds.insert(source.name.clone(), (feed, stats));
    }
    Ok(Some(followers))
}

/// Starts a consumer for every Kafka source of `project`. Sources that
/// `followers` follow publish through their feed (already caught up).
pub(crate) async fn start_in_server(
    project: &feature_store::Project,
    online: Arc<feature_store::OnlineStore>,
    followers: Option<&FeedFollowers>,
) -> Result<ServerStreams> {
    let store = project.delta_store()?;
    let stop = Arc::new(AtomicBool::new(false));
    let run_id = server_run_id();
    let mut streams = ServerStreams {
        stop: stop.clone(),
        tasks: Vec::new(),
        statuses: Vec::new(),
    };
    for source in project.sources.iter().filter(|s| s.format == Format::Kafka) {
        let Some(kafka) = &source.kafka else {
            continue;
        };
        // What bronze gained after the silver version the tiles were
        // loaded from, before the consumer resumes where bronze ends.
        let (feed, stats) = match followers.and_then(|f| f.feeds.get(&source.name)) {
            Some((feed, stats)) => (feed.clone(), stats.clone()),
            None => caught_up_feed(project, source, &online, &store, &run_id).await?,
        };
        let options = StreamOptions {
            on_received: Some(feed.hook(None).context("starting the window tiles' feed")?),
            exit_when_idle: None,
            run_id: run_id.clone(),
            default_group: format!("aurum.{}.{}", project.name, source.name),
        };
        let (store, spec, stop, for_run) =
            (store.clone(), source.clone(), stop.clone(), stats.clone());
        let runtime = tokio::runtime::Handle::current();
        let task = tokio::task::spawn_blocking(move || {
            let outcome = stream::run(store, &spec, &options, &stop, for_run.clone(), runtime);
            // Said when it happens, and shown by /health/ready: the server
            // goes on serving what the tiles hold.
            if let Err(e) = &outcome {
                tracing::error!(source = %spec.name, "the stream stopped: {e}");
                if let Ok(mut failed) = for_run.failed.lock() {
                    *failed = Some(e.to_string());
                }
            }
            outcome
        });
        streams.tasks.push((source.name.clone(), task));
        streams.statuses.push(serving::state::StreamStatus {
            source: source.name.clone(),
            topic: kafka.topic.clone(),
            stats,
            started_ms: chrono::Utc::now().timestamp_millis(),
        });
    }
    if streams.tasks.is_empty() {
        bail!("--stream: the project has no Kafka source (format = \"kafka\")");
    }
    Ok(streams)
}

impl ServerStreams {
    /// Stops every consumer (each lands what it holds first) and reports
    /// the first that failed.
    pub(crate) async fn stop(self) -> Result<()> {
        self.stop.store(true, Ordering::Relaxed);
        let mut failure = None;
        for (source, task) in self.tasks {
            match task.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    failure
                        .get_or_insert(anyhow::Error::new(e).context(format!("stream {source}")));
                }
                Err(e) => {
                    failure.get_or_insert(anyhow::anyhow!("stream {source}: {e}"));
                }
            }
        }
        failure.map_or(Ok(()), Err)
    }
}
