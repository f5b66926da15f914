//! The serial pool release executor (model: `apus_rules::rollout::serial`): one task per
//! running release, on the node that holds the runner's lease. Each stage's outcome is
//! committed as a change of the release state — a drain (`server_drain`), an undrain
//! (`server_undrain`) or a release step (`pool_release`) — against the stage it was
//! computed at, so a stage is done once however nodes race, and a restarted node goes on
//! from the committed stage (a stage in progress is repeated: hooks should be idempotent).
//!
//! In-flight requests and the settle error rate are this node's own counts.

use std::sync::Arc;
use std::time::{Duration, Instant};

use apus_rules::rollout::{SerialDoc, Stage};
use apus_schema::time::now_us;
use apus_schema::ChangeKind;
use bytes::Bytes;

use crate::config::DeployHook;
use crate::pools::Pool;
use crate::state::{Edit, ReleaseState};
use crate::GatewayError;

const POLL: Duration = Duration::from_millis(100);

/// Drive the serial release of `pool` until it ends (or this node stops holding it).
pub(crate) async fn run(
    release: Arc<ReleaseState>,
    pool: String,
    hooks: Arc<Vec<DeployHook>>,
    held: Arc<std::sync::atomic::AtomicBool>,
) {
    loop {
        // Another node took the lease: it goes on from the committed stage.
        if !held.load(std::sync::atomic::Ordering::SeqCst) {
            return;
        }
        let cur = release.load_full();
        let Some(d) = cur.doc.serial.get(&pool).cloned() else {
            return;
        };
        if !d.running() {
            return;
        }
        let Some(server) = d.server().map(str::to_string) else {
            return;
        };
        let outcome = match release.pools().get(&pool).cloned() {
            None => Err(format!("pool {pool} is not on this node")),
            Some(p) => stage(&p, &d, &server, &hooks).await,
        };
        if let Err(why) = &outcome {
            tracing::warn!(pool = %pool, server = %server, stage = d.stage.as_str(), reason = %why, "serial release stopped");
        }
        match commit(&release, &pool, &d, &server, outcome).await {
            Ok(()) | Err(GatewayError::Conflict(_)) => {}
            Err(e) => {
                tracing::warn!(pool = %pool, error = %e, "serial release step not committed; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// Do one stage; `Err` says why the release must stop.
async fn stage(p: &Pool, d: &SerialDoc, server: &str, hooks: &[DeployHook]) -> Result<(), String> {
    let limit = Duration::from_micros(d.spec.us(d.stage).max(0) as u64);
    let addr: std::net::SocketAddr = server
        .parse()
        .map_err(|_| format!("server `{server}` is not ip:port"))?;
    match d.stage {
        Stage::Drain | Stage::Undrain => Ok(()),
        Stage::WaitIdle => {
            let st = p.stats_of(addr);
            let until = Instant::now() + limit;
            loop {
                let n = st.inflight.load(std::sync::atomic::Ordering::Relaxed);
                if n <= 0 {
                    return Ok(());
                }
                if Instant::now() >= until {
                    return Err(format!(
                        "{n} requests still in flight after {}",
                        d.spec.drain_timeout
                    ));
                }
                tokio::time::sleep(POLL).await;
            }
        }
        Stage::Deploy => deploy(hooks, d, server, limit).await,
        Stage::Health => {
            // Healthy through one whole check period after the deploy, so the verdict
            // comes from checks of the new build.
            let need = p.check_period().max(Duration::from_secs(1));
            let began = Instant::now();
            let until = began + limit.max(need);
            let mut since: Option<Instant> = None;
            loop {
                match p.passes_check(addr, began) {
                    None => return Err(format!("server {server} left the pool")),
                    Some(true) => {
                        let s = *since.get_or_insert_with(Instant::now);
                        if s.elapsed() >= need {
                            return Ok(());
                        }
                    }
                    Some(false) => since = None,
                }
                if Instant::now() >= until {
                    return Err(format!(
                        "not healthy within {} after the deploy",
                        d.spec.health_timeout
                    ));
                }
                tokio::time::sleep(POLL).await;
            }
        }
        Stage::Settle => {
            use std::sync::atomic::Ordering::Relaxed;
            let st = p.stats_of(addr);
            let (r0, e0) = (st.requests.load(Relaxed), st.errors.load(Relaxed));
            tokio::time::sleep(limit).await;
            let (n, bad) = (st.requests.load(Relaxed) - r0, st.errors.load(Relaxed) - e0);
            if n >= d.spec.min_requests.max(1) {
                let rate = bad as f64 / n as f64;
                if rate > d.spec.max_error_rate {
                    return Err(format!(
                        "error rate {:.1} % ({bad} of {n} requests) while settling for {}, over {:.1} %",
                        rate * 100.0,
                        d.spec.settle,
                        d.spec.max_error_rate * 100.0
                    ));
                }
            }
            let recent = Instant::now()
                .checked_sub(p.check_period() * 2)
                .unwrap_or_else(Instant::now);
            if p.passes_check(addr, recent) == Some(false) {
                return Err("failed its health check while settling".into());
            }
            Ok(())
        }
    }
}

/// Call the release's deploy hook for `server`.
async fn deploy(
    hooks: &[DeployHook],
    d: &SerialDoc,
    server: &str,
    limit: Duration,
) -> Result<(), String> {
    let h = hooks
        .iter()
        .find(|h| h.name == d.spec.hook)
        .ok_or_else(|| format!("no deploy hook `{}` in the gateway config", d.spec.hook))?;
    let spec = &d.spec;
    if let Some(url) = &h.url {
        let body = serde_json::json!({
            "pool": spec.pool, "server": server, "build": spec.build, "started_by": d.started_by,
        });
        return match apus_control::http::post(
            url,
            "application/json",
            Bytes::from(body.to_string()),
            limit,
        )
        .await
        {
            Ok((s, _)) if (200..300).contains(&s) => Ok(()),
            Ok((s, answer)) => Err(format!(
                "deploy hook `{}` answered {s}: {}",
                h.name,
                String::from_utf8_lossy(&answer[..answer.len().min(300)]).trim()
            )),
            Err(e) => Err(format!("deploy hook `{}`: {e}", h.name)),
        };
    }
    let Some((prog, args)) = h.command.split_first() else {
        return Err(format!("deploy hook `{}` has no command", h.name));
    };
    let child = tokio::process::Command::new(prog)
        .args(args)
        .env("APUS_POOL", &spec.pool)
        .env("APUS_SERVER", server)
        .env("APUS_BUILD", &spec.build)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("deploy hook `{}`: cannot run `{prog}`: {e}", h.name))?;
    let out = tokio::time::timeout(limit, child.wait_with_output())
        .await
        .map_err(|_| {
            format!(
                "deploy hook `{}` still running after {}; killed",
                h.name, spec.hook_timeout
            )
        })?
        .map_err(|e| format!("deploy hook `{}`: {e}", h.name))?;
    if out.status.success() {
        return Ok(());
    }
    let err = String::from_utf8_lossy(&out.stderr);
    let tail: String = err
        .trim()
        .chars()
        .rev()
        .take(300)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    Err(format!(
        "deploy hook `{}` exited with {}{}",
        h.name,
        out.status
            .code()
            .map_or("a signal".to_string(), |c| c.to_string()),
        if tail.is_empty() {
            String::new()
        } else {
            format!(": {tail}")
        }
    ))
}

/// Commit a stage's outcome, if the release is still at that stage.
async fn commit(
    release: &ReleaseState,
    pool: &str,
    at: &SerialDoc,
    server: &str,
    outcome: Result<(), String>,
) -> Result<(), GatewayError> {
    let actor = format!("release:{pool}");
    let reason = format!("serial release of {} on pool {pool}", at.spec.build);
    release
        .change(None, &actor, &reason, |cur| {
            let mut doc = (*cur.doc).clone();
            let d = doc
                .serial
                .get_mut(pool)
                .filter(|d| {
                    d.running()
                        && d.index == at.index
                        && d.stage == at.stage
                        && d.stage_started == at.stage_started
                })
                .ok_or_else(|| GatewayError::Conflict("the release moved on".into()))?;
            let n = format!("{}/{}", d.index + 1, d.servers.len());
            let mut kind = ChangeKind::PoolRelease;
            let note = match &outcome {
                Ok(()) => {
                    let said = match d.stage {
                        Stage::Drain => {
                            kind = ChangeKind::ServerDrain;
                            "drained".to_string()
                        }
                        Stage::WaitIdle => "no request in flight".into(),
                        Stage::Deploy => format!("{} deployed", d.spec.build),
                        Stage::Health => "passes its health check".into(),
                        Stage::Undrain => {
                            kind = ChangeKind::ServerUndrain;
                            "back in rotation".into()
                        }
                        Stage::Settle => format!("settled for {}", d.spec.settle),
                    };
                    d.advance(now_us());
                    let end = if d.running() {
                        String::new()
                    } else {
                        format!("; release of {} done on every server", d.spec.build)
                    };
                    format!("server {n} {server}: {said}{end}")
                }
                Err(why) => {
                    let stage = d.stage;
                    d.fail(why.clone());
                    format!(
                        "server {n} {server}: {} failed: {why}; release stopped, {server} stays drained, {} server(s) on {}",
                        stage.as_str(),
                        d.done.len(),
                        d.spec.build
                    )
                }
            };
            let p = doc.pools.entry(pool.to_string()).or_default();
            match (&outcome, at.stage) {
                (Ok(()), Stage::Drain) | (Err(_), _) => {
                    p.drained.insert(server.to_string());
                }
                (Ok(()), Stage::Undrain) => {
                    p.drained.remove(server);
                }
                _ => {}
            }
            let mut e = Edit::new(doc, kind, "", "", &format!("{pool}/{server}"));
            e.summary = Some(format!("pool {pool} release: {note}"));
            let mut touched = apus_schema::Touched::new();
            touched.add("pool", pool).add("upstream", server);
            e.touched = Some(touched);
            Ok(e)
        })
        .await
        .map(|_| ())
}
