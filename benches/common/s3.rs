//! A real S3 server for the object-storage benchmarks: moto's server mode
//! from the test virtualenv (`make python`), on loopback with an ephemeral
//! port, its request log kept in a file so that a bench can count the
//! requests (by method, LIST apart from other GETs) a stage made.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};

use anyhow::{Context, Result, bail};

/// A running moto S3 server with one bucket; stopped when dropped.
pub struct S3Server {
    child: Child,
    _stdin: ChildStdin,
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

/// Requests by kind.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Requests {
    pub list: usize,
    pub get: usize,
    pub head: usize,
    pub put: usize,
    pub other: usize,
}

impl std::ops::Sub for Requests {
    type Output = Requests;
    fn sub(self, before: Requests) -> Requests {
        Requests {
            list: self.list - before.list,
            get: self.get - before.get,
            head: self.head - before.head,
            put: self.put - before.put,
            other: self.other - before.other,
        }
    }
}

impl std::fmt::Display for Requests {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "LIST {} GET {} HEAD {} PUT {}",
            self.list, self.get, self.head, self.put
        )?;
        if self.other > 0 {
            write!(f, " other {}", self.other)?;
        }
        Ok(())
    }
}

impl S3Server {
    /// Starts the server with `bucket` and sets the test credentials in
    /// this process's environment (call before any other thread starts).
    pub fn start(bucket: &str) -> Result<S3Server> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let python = root.join(".tools/venv/bin/python");
        if !python.is_file() {
            bail!("{} is missing: run `make python`", python.display());
        }
        let dir = tempfile::tempdir()?;
        let log = dir.path().join("requests.log");
        let mut child = Command::new(python)
            .arg(root.join("tests/python/s3_server.py"))
            .arg(bucket)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .context("starting moto's S3 server")?;
        let stdin = child.stdin.take().context("stdin is piped")?;
        let mut line = String::new();
        BufReader::new(child.stdout.take().context("stdout is piped")?).read_line(&mut line)?;
        let started: serde_json::Value =
            serde_json::from_str(&line).with_context(|| format!("the S3 server said {line:?}"))?;
        let endpoint = started["endpoint"]
            .as_str()
            .context("no endpoint")?
            .to_string();
        // SAFETY: called at the start of a bench's main, before it starts
        // any other thread, so nothing reads the environment concurrently.
        unsafe {
            std::env::set_var("AWS_ACCESS_KEY_ID", "testing");
            std::env::set_var("AWS_SECRET_ACCESS_KEY", "testing");
        }
        Ok(S3Server {
            child,
            _stdin: stdin,
            endpoint,
            log,
            _dir: dir,
        })
    }

    /// The `[storage]` table of a project whose tables live in `bucket`.
    pub fn storage_toml(&self, uri: &str) -> String {
        format!(
            "\n[storage]\nuri = \"{uri}\"\noptions = {{ endpoint = \"{}\", allow_http = \"true\", region = \"us-east-1\" }}\n",
            self.endpoint
        )
    }

    /// The requests served so far.
    pub fn requests(&self) -> Requests {
        let mut counted = Requests::default();
        let Ok(text) = std::fs::read_to_string(&self.log) else {
            return counted;
        };
        for line in text.lines() {
            // The server colours some lines (`\x1b[33m…\x1b[0m`).
            let line = line.replace("\x1b[33m", "").replace("\x1b[0m", "");
            let Some(request) = line.split('"').nth(1) else {
                continue;
            };
            let mut words = request.split(' ');
            let (method, target) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
            match method {
                "GET" if target.contains("list-type=") => counted.list += 1,
                "GET" => counted.get += 1,
                "HEAD" => counted.head += 1,
                "PUT" => counted.put += 1,
                _ => counted.other += 1,
            }
        }
        counted
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
