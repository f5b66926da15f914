//! `apus config watch`: a config-center client for services. It keeps the named files of
//! one project/env/pool in a directory (written atomically), runs a reload command when
//! they change, and long-polls for changes. The directory is its cache: when the server is
//! away it keeps serving the files it has (offline mode), retries with backoff from 1 s to
//! 2 min, and re-pulls everything every 5 minutes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};

#[derive(Subcommand)]
pub enum ConfigCmd {
    /// Keep config files in a directory up to date.
    Watch(WatchArgs),
}

#[derive(Args)]
pub struct WatchArgs {
    /// The config server (a gateway's admin listener), `http://HOST:PORT`.
    #[arg(long)]
    server: String,
    #[arg(long)]
    project: String,
    #[arg(long)]
    env: String,
    #[arg(long)]
    pool: String,
    /// A file to keep (its path under the pool); repeat for more.
    #[arg(long = "file", required = true)]
    files: Vec<String>,
    /// Where the files go (and the cache lives).
    #[arg(long)]
    dir: PathBuf,
    /// Access key for signed requests (or `APUS_CONFIG_KEY`); its secret comes from
    /// `APUS_CONFIG_SECRET` (kept out of the process list).
    #[arg(long)]
    key: Option<String>,
    #[arg(skip)]
    secret: Option<String>,
    /// Use a bearer token that may read the project/env (from `APUS_TOKEN`) instead of an
    /// access key.
    #[arg(skip)]
    token: Option<String>,
    /// This instance's ID (sticky percentage gray releases hash on it).
    #[arg(long)]
    instance: Option<String>,
    /// Labels, `k=v,k2=v2` (gray releases by label).
    #[arg(long, default_value = "")]
    labels: String,
    /// Run this (`sh -c`) after files changed; `APUS_CHANGED` lists them.
    #[arg(long)]
    reload: Option<String>,
    /// Long-poll hold time asked of the server, seconds.
    #[arg(long, default_value_t = 30)]
    poll_secs: u64,
    /// Pull once and exit (non-zero if a file could not be had from server or cache).
    #[arg(long)]
    once: bool,
}

pub fn run(cmd: ConfigCmd) -> Result<()> {
    match cmd {
        ConfigCmd::Watch(a) => watch(a),
    }
}

/// Percent-encode a query value (everything but unreserved characters).
fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

struct Client {
    a: WatchArgs,
    http: reqwest::blocking::Client,
    /// path → release key held.
    keys: BTreeMap<String, String>,
    state_file: PathBuf,
}

enum Got {
    Changed(Vec<String>),
    Same,
}

impl Client {
    fn extra(&self) -> String {
        let mut q = String::new();
        if let Some(i) = &self.a.instance {
            q.push_str(&format!("&instance={}", enc(i)));
        }
        if !self.a.labels.is_empty() {
            q.push_str(&format!("&labels={}", enc(&self.a.labels)));
        }
        q
    }

    /// GET `path_and_query`, signed; status and body.
    fn get(&self, path_and_query: &str, timeout: Duration) -> Result<(u16, String)> {
        let url = format!("{}{path_and_query}", self.a.server.trim_end_matches('/'));
        let mut req = self.http.get(&url).timeout(timeout);
        if let (Some(k), Some(s)) = (&self.a.key, &self.a.secret) {
            let ts = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as i64)
                .unwrap_or(0);
            let sig = apus_gateway::confcenter::sign::signature(s, ts, path_and_query);
            req = req
                .header("authorization", format!("Apus {k}:{sig}"))
                .header("timestamp", ts.to_string());
        } else if let Some(t) = &self.a.token {
            req = req.bearer_auth(t);
        }
        let r = req.send()?;
        let st = r.status().as_u16();
        Ok((st, r.text().unwrap_or_default()))
    }

    /// Fetch `path` if its release changed; write it.
    fn pull(&mut self, path: &str) -> Result<bool> {
        let have = self.keys.get(path).cloned().unwrap_or_default();
        let pq = format!(
            "/config/v1/{}/{}/{}/{path}?release={}{}",
            enc(&self.a.project),
            enc(&self.a.env),
            enc(&self.a.pool),
            enc(&have),
            self.extra()
        );
        let (st, body) = self.get(&pq, Duration::from_secs(30))?;
        match st {
            304 => Ok(false),
            200 => {
                let v: serde_json::Value = serde_json::from_str(&body)?;
                let content = v["content"].as_str().context("no content in the answer")?;
                let key = v["release_key"].as_str().unwrap_or_default().to_string();
                write_atomic(&self.a.dir.join(path), content.as_bytes())?;
                eprintln!("config watch: {path} now at release {key}");
                self.keys.insert(path.to_string(), key);
                Ok(true)
            }
            _ => bail!("{path}: {st}: {}", body.trim()),
        }
    }

    /// Wait for a change notification (or the hold time).
    fn poll(&self) -> Result<Got> {
        let watch: Vec<String> = self
            .a
            .files
            .iter()
            .map(|p| format!("{p}@{}", self.keys.get(p).cloned().unwrap_or_default()))
            .collect();
        let pq = format!(
            "/config/v1/notifications?project={}&env={}&pool={}&watch={}&timeout={}{}",
            enc(&self.a.project),
            enc(&self.a.env),
            enc(&self.a.pool),
            enc(&watch.join(",")),
            self.a.poll_secs,
            self.extra()
        );
        let (st, body) = self.get(&pq, Duration::from_secs(self.a.poll_secs + 15))?;
        match st {
            304 => Ok(Got::Same),
            200 => {
                let v: serde_json::Value = serde_json::from_str(&body)?;
                Ok(Got::Changed(
                    v["changed"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|c| c["path"].as_str().map(str::to_string))
                        .collect(),
                ))
            }
            _ => bail!("notifications: {st}: {}", body.trim()),
        }
    }

    fn save(&self) {
        let body = serde_json::to_vec(&self.keys).unwrap_or_default();
        if let Err(e) = write_atomic(&self.state_file, &body) {
            eprintln!(
                "config watch: cannot save {}: {e}",
                self.state_file.display()
            );
        }
    }

    fn reload(&self, changed: &[String]) {
        let Some(cmd) = &self.a.reload else { return };
        match std::process::Command::new("sh")
            .arg("-c")
            .arg(cmd)
            .env("APUS_CHANGED", changed.join(" "))
            .status()
        {
            Ok(s) if s.success() => eprintln!("config watch: reloaded ({})", changed.join(", ")),
            Ok(s) => eprintln!("config watch: reload command failed ({s})"),
            Err(e) => eprintln!("config watch: reload command: {e}"),
        }
    }

    /// Pull `paths` (only files this client keeps); the ones that changed. A failure
    /// leaves that file's cached copy as it is, and what did change is still saved and
    /// reloaded before the error is returned.
    fn pull_all(&mut self, paths: &[String]) -> Result<Vec<String>> {
        let mut changed = Vec::new();
        let mut failed = None;
        let mine: Vec<String> = paths
            .iter()
            .filter(|p| self.a.files.contains(p))
            .cloned()
            .collect();
        for p in &mine {
            match self.pull(p) {
                Ok(true) => changed.push(p.clone()),
                Ok(false) => {}
                Err(e) => {
                    failed.get_or_insert(e);
                }
            }
        }
        if !changed.is_empty() {
            self.save();
            self.reload(&changed);
        }
        match failed {
            Some(e) => Err(e),
            None => Ok(changed),
        }
    }
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d)?;
    }
    let tmp = path.with_extension("apus-tmp");
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    Ok(())
}

fn watch(mut a: WatchArgs) -> Result<()> {
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    a.key = a.key.or_else(|| env("APUS_CONFIG_KEY"));
    a.secret = env("APUS_CONFIG_SECRET");
    a.token = env("APUS_TOKEN");
    if a.key.is_some() && a.secret.is_none() {
        bail!("--key needs its secret in APUS_CONFIG_SECRET");
    }
    for f in &a.files {
        if f.split('/').any(|s| s.is_empty() || s == "..") {
            bail!("--file `{f}`: a relative path without `..`");
        }
    }
    std::fs::create_dir_all(&a.dir)?;
    let state_file = a.dir.join(".apus-config.json");
    let keys: BTreeMap<String, String> = std::fs::read(&state_file)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    let mut c = Client {
        http: reqwest::blocking::Client::builder().build()?,
        keys,
        state_file,
        a,
    };
    let all = c.a.files.clone();
    if c.a.once {
        return match c.pull_all(&all) {
            Ok(_) => Ok(()),
            Err(e) => {
                let cached = all.iter().all(|f| c.a.dir.join(f).exists());
                if cached {
                    eprintln!("config watch: server unreachable ({e}); serving the cached files");
                    Ok(())
                } else {
                    Err(e)
                }
            }
        };
    }
    let mut backoff = Duration::from_secs(1);
    let mut last_full: Option<Instant> = None;
    let mut offline = false;
    loop {
        let step = (|| -> Result<()> {
            if last_full.is_none_or(|t| t.elapsed() >= Duration::from_secs(300)) {
                c.pull_all(&all)?;
                last_full = Some(Instant::now());
            }
            if let Got::Changed(paths) = c.poll()? {
                c.pull_all(&paths)?;
            }
            Ok(())
        })();
        match step {
            Ok(()) => {
                if offline {
                    eprintln!("config watch: server back");
                    offline = false;
                    last_full = None;
                }
                backoff = Duration::from_secs(1);
            }
            Err(e) => {
                if !offline {
                    eprintln!(
                        "config watch: server unreachable ({e}); serving the cached files (offline)"
                    );
                    offline = true;
                }
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(Duration::from_secs(120));
            }
        }
    }
}
