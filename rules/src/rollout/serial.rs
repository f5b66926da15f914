//! A serial pool release (the seed's Collo): a new build goes onto a pool one server at a
//! time, so that a bad build cannot take the whole pool down (防雪崩). Per server:
//! drain → wait for its in-flight requests → deploy hook → health check → undrain →
//! settle (its error rate watched). Any failure stops the release where it is: the
//! servers after it keep the old build, and the failed server stays drained.
//!
//! ```json
//! {"pool": "web", "build": "v2.3.1", "hook": "deploy-web", "settle": "30s"}
//! ```
//!
//! The hook is named, not given: deploy hooks (a URL or a command) are set in the gateway's
//! config file by its operator, so an API caller can choose one but never run a command of
//! its own.

use serde::{Deserialize, Serialize};

use crate::alarm::parse_duration;

fn d30() -> String {
    "30s".into()
}
fn d120() -> String {
    "120s".into()
}
fn d60() -> String {
    "60s".into()
}
fn d10() -> String {
    "10s".into()
}
fn five_percent() -> f64 {
    0.05
}
fn ten() -> u64 {
    10
}

/// A serial release as asked for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SerialSpec {
    pub pool: String,
    /// What goes on (told to the hook: a version, an image, an artifact URL).
    pub build: String,
    /// The deploy hook's name in the gateway config.
    pub hook: String,
    /// The servers in order (default: every server of the pool, in its order).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub servers: Vec<String>,
    /// Longest wait for a drained server's in-flight requests.
    #[serde(default = "d30")]
    pub drain_timeout: String,
    /// Longest a deploy hook may run.
    #[serde(default = "d120")]
    pub hook_timeout: String,
    /// Longest wait for the health check to pass after the deploy.
    #[serde(default = "d60")]
    pub health_timeout: String,
    /// How long a server's error rate is watched after it is back.
    #[serde(default = "d10")]
    pub settle: String,
    /// Highest error rate (5xx share) of the server while it settles.
    #[serde(default = "five_percent")]
    pub max_error_rate: f64,
    /// Least requests for the settle check to judge (below it, the server passes).
    #[serde(default = "ten")]
    pub min_requests: u64,
}

impl SerialSpec {
    pub fn check(&self) -> Result<(), String> {
        if self.build.is_empty() || self.build.len() > 256 {
            return Err("build: 1 to 256 characters".into());
        }
        for (f, v) in [
            ("drain_timeout", &self.drain_timeout),
            ("hook_timeout", &self.hook_timeout),
            ("health_timeout", &self.health_timeout),
            ("settle", &self.settle),
        ] {
            let us = parse_duration(v).map_err(|e| format!("{f}: {e}"))?;
            if us > 3_600_000_000 {
                return Err(format!("{f}: at most 1h"));
            }
        }
        if !(0.0..=1.0).contains(&self.max_error_rate) {
            return Err("max_error_rate: between 0 and 1".into());
        }
        if self.servers.len() > 1000 {
            return Err("servers: at most 1000".into());
        }
        Ok(())
    }
    pub fn us(&self, stage: Stage) -> i64 {
        let v = match stage {
            Stage::WaitIdle => &self.drain_timeout,
            Stage::Deploy => &self.hook_timeout,
            Stage::Health => &self.health_timeout,
            Stage::Settle => &self.settle,
            Stage::Drain | Stage::Undrain => return 0,
        };
        parse_duration(v).unwrap_or(0)
    }
}

/// Where one server is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    Drain,
    WaitIdle,
    Deploy,
    Health,
    Undrain,
    Settle,
}

impl Stage {
    /// The stage after this one on the same server (`None` after settling).
    pub fn next(self) -> Option<Stage> {
        Some(match self {
            Stage::Drain => Stage::WaitIdle,
            Stage::WaitIdle => Stage::Deploy,
            Stage::Deploy => Stage::Health,
            Stage::Health => Stage::Undrain,
            Stage::Undrain => Stage::Settle,
            Stage::Settle => return None,
        })
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Drain => "drain",
            Stage::WaitIdle => "wait for in-flight requests",
            Stage::Deploy => "deploy",
            Stage::Health => "health check",
            Stage::Undrain => "undrain",
            Stage::Settle => "settle",
        }
    }
}

/// How a serial release stands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "phase", rename_all = "snake_case")]
pub enum SerialPhase {
    Running,
    Succeeded,
    /// Stopped at `server` in stage `at`.
    Failed {
        server: String,
        at: Stage,
        reason: String,
    },
    /// Stopped by a person between stages.
    Aborted {
        reason: String,
    },
}

/// A serial release in the release state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SerialDoc {
    pub spec: SerialSpec,
    /// The servers, fixed at the start.
    pub servers: Vec<String>,
    /// Index of the current server.
    pub index: usize,
    pub stage: Stage,
    /// When the current stage began (µs).
    pub stage_started: i64,
    #[serde(flatten)]
    pub phase: SerialPhase,
    /// Servers on the new build, in order.
    pub done: Vec<String>,
    pub started_by: String,
}

impl SerialDoc {
    pub fn new(spec: SerialSpec, servers: Vec<String>, by: &str, now: i64) -> SerialDoc {
        SerialDoc {
            spec,
            servers,
            index: 0,
            stage: Stage::Drain,
            stage_started: now,
            phase: SerialPhase::Running,
            done: Vec::new(),
            started_by: by.into(),
        }
    }
    pub fn running(&self) -> bool {
        self.phase == SerialPhase::Running
    }
    /// The server being released.
    pub fn server(&self) -> Option<&str> {
        self.servers.get(self.index).map(String::as_str)
    }
    /// The current stage passed: on to the next stage, or the next server, or the end.
    pub fn advance(&mut self, now: i64) {
        if !self.running() {
            return;
        }
        self.stage_started = now;
        match self.stage.next() {
            Some(s) => self.stage = s,
            None => {
                if let Some(s) = self.servers.get(self.index) {
                    self.done.push(s.clone());
                }
                self.index += 1;
                self.stage = Stage::Drain;
                if self.index >= self.servers.len() {
                    self.phase = SerialPhase::Succeeded;
                }
            }
        }
    }
    /// The current stage failed: the release stops here.
    pub fn fail(&mut self, reason: String) {
        if self.running() {
            self.phase = SerialPhase::Failed {
                server: self.server().unwrap_or_default().to_string(),
                at: self.stage,
                reason,
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> SerialSpec {
        serde_json::from_str(r#"{"pool":"web","build":"v2","hook":"deploy"}"#).unwrap()
    }

    #[test]
    fn a_release_walks_every_server_through_every_stage() {
        let s = spec();
        s.check().unwrap();
        assert_eq!(s.us(Stage::Settle), 10_000_000);
        let mut d = SerialDoc::new(s, vec!["a".into(), "b".into()], "ops", 0);
        let mut seen = Vec::new();
        while d.running() {
            seen.push((d.server().unwrap().to_string(), d.stage));
            d.advance(1);
        }
        assert_eq!(seen.len(), 12);
        assert_eq!(seen[0], ("a".into(), Stage::Drain));
        assert_eq!(seen[5], ("a".into(), Stage::Settle));
        assert_eq!(seen[6], ("b".into(), Stage::Drain));
        assert_eq!(d.phase, SerialPhase::Succeeded);
        assert_eq!(d.done, ["a", "b"]);
    }

    #[test]
    fn a_failure_stops_at_the_server_and_stage() {
        let mut d = SerialDoc::new(spec(), vec!["a".into(), "b".into(), "c".into()], "ops", 0);
        for _ in 0..8 {
            d.advance(1);
        }
        assert_eq!((d.server(), d.stage), (Some("b"), Stage::Deploy));
        d.fail("hook exited with 3".into());
        d.advance(2);
        assert_eq!(
            d.phase,
            SerialPhase::Failed {
                server: "b".into(),
                at: Stage::Deploy,
                reason: "hook exited with 3".into()
            }
        );
        assert_eq!(d.done, ["a"]);
        let json = serde_json::to_value(&d).unwrap();
        assert_eq!(
            serde_json::from_value::<SerialDoc>(json.clone()).unwrap(),
            d
        );
        assert_eq!(json["phase"], "failed");
        assert_eq!(json["stage"], "deploy");
        let mut bad = spec();
        bad.settle = "2h".into();
        assert!(bad.check().unwrap_err().contains("settle"));
        assert!(serde_json::from_str::<SerialSpec>(
            r#"{"pool":"web","build":"v2","hook":"d","command":["rm"]}"#
        )
        .is_err());
    }
}
