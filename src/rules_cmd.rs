//! `apus rules check | export | import`: validate a config offline, and move release state
//! between a file and the control store (embedded log or etcd).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use apus_control::{Change, ReleaseDoc};
use apus_schema::{ChangeRecord, Micros};
use clap::Subcommand;

#[derive(Subcommand)]
pub enum RulesCmd {
    /// Validate a gateway config / rule file, an alarm rule file (`[[rule]]` tables) or a
    /// directory of alarm rule files, offline; exit 1 with the reason if invalid.
    Check {
        /// The file to check.
        file: PathBuf,
    },
    /// Print the release state in force (routes, pools, drains) as JSON.
    Export {
        /// Data directory of the node (the embedded log, or etcd's local snapshot).
        #[arg(long, default_value = "data")]
        data_dir: PathBuf,
        /// `local` or `etcd://HOST:PORT[,HOST:PORT]/PREFIX`.
        #[arg(long, default_value = "local")]
        control: String,
    },
    /// Make a file's routes and pools the release state, as one new audited version:
    /// a JSON export, or a gateway config (TOML). Validated first; nothing is written
    /// unless it compiles.
    Import {
        /// The file (`.json` from `export`, or a gateway `.toml`).
        file: PathBuf,
        #[arg(long, default_value = "data")]
        data_dir: PathBuf,
        #[arg(long, default_value = "local")]
        control: String,
        /// Why (kept in the change record).
        #[arg(long, default_value = "")]
        reason: String,
        /// Refuse (exit 1) unless the store is at this version.
        #[arg(long)]
        base_version: Option<u64>,
    },
}

pub fn run(cmd: RulesCmd) -> Result<()> {
    match cmd {
        RulesCmd::Check { file } => check(&file),
        RulesCmd::Export { data_dir, control } => {
            let rt = tokio::runtime::Runtime::new()?;
            rt.block_on(async {
                let store = apus_control::open(&control, &data_dir).await?;
                let head = store.head().await?.context("the control store is empty")?;
                println!(
                    "{}",
                    serde_json::to_string_pretty(&serde_json::json!({
                        "version": head.version,
                        "state": head.state,
                    }))?
                );
                Ok(())
            })
        }
        RulesCmd::Import {
            file,
            data_dir,
            control,
            reason,
            base_version,
        } => {
            let doc = read_doc(&file)?;
            let rt = tokio::runtime::Runtime::new()?;
            rt.block_on(import(
                doc,
                &file,
                &data_dir,
                &control,
                &reason,
                base_version,
            ))
        }
    }
}

/// Whether `file` is an alarm rule file: TOML whose top level holds `[[rule]]` tables.
fn is_alarm_file(file: &Path) -> bool {
    std::fs::read_to_string(file)
        .ok()
        .and_then(|t| t.parse::<toml::Table>().ok())
        .is_some_and(|t| t.contains_key("rule"))
}

/// Check alarm rule files (one, or every `*.toml` of a directory) as the evaluator would.
fn check_alarms(files: &[PathBuf]) -> Result<()> {
    let mut taken = std::collections::HashSet::new();
    let mut n = 0;
    for f in files {
        let text = std::fs::read_to_string(f).with_context(|| format!("{}", f.display()))?;
        let name = f.display().to_string();
        match apus_rules::alarm::parse_rule_file(&name, &text, &mut taken) {
            Ok(r) => n += r.len(),
            Err(e) => {
                eprintln!("invalid: {e}");
                std::process::exit(1);
            }
        }
    }
    println!("ok: {n} alarm rules in {} files", files.len());
    Ok(())
}

fn check(file: &Path) -> Result<()> {
    if file.is_dir() {
        let mut files: Vec<PathBuf> = std::fs::read_dir(file)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .collect();
        files.sort();
        return check_alarms(&files);
    }
    if is_alarm_file(file) {
        return check_alarms(&[file.to_path_buf()]);
    }
    match apus_gateway::GatewayConfig::load(file) {
        Ok((cfg, rules)) => {
            let n_rules: usize = rules.routes().map(|r| r.gray_rules.len()).sum();
            println!(
                "ok: {} pools, {} routes, {} gray rules",
                cfg.pools.len(),
                rules.routes().count(),
                n_rules
            );
            Ok(())
        }
        Err(e) => {
            eprintln!("invalid: {e}");
            std::process::exit(1);
        }
    }
}

/// A JSON export (`{"state": …}` or a bare state) or a gateway TOML config.
fn read_doc(file: &Path) -> Result<ReleaseDoc> {
    let text = std::fs::read_to_string(file).with_context(|| format!("{}", file.display()))?;
    if file.extension().is_some_and(|e| e == "toml") {
        let (cfg, rules) = apus_gateway::GatewayConfig::load(file)?;
        return Ok(apus_gateway::state::seed_doc(
            rules.routes().cloned().collect(),
            &cfg.pools,
        ));
    }
    let v: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{}", file.display()))?;
    let state = v.get("state").cloned().unwrap_or(v);
    serde_json::from_value(state)
        .with_context(|| format!("{}: not a release state", file.display()))
}

async fn import(
    doc: ReleaseDoc,
    file: &Path,
    data_dir: &Path,
    control: &str,
    reason: &str,
    base_version: Option<u64>,
) -> Result<()> {
    let pools: Vec<&str> = doc.pools.keys().map(String::as_str).collect();
    let loader = apus_gateway::config::file_loader(file.parent());
    apus_rules::RuleSet::compile(&doc.routes, &pools, &loader)
        .map_err(|e| anyhow::anyhow!("invalid: {e}"))?;
    let store = apus_control::open(control, data_dir).await?;
    let current = store.head().await?.map_or(0, |h| h.version);
    if let Some(b) = base_version {
        if b != current {
            bail!("conflict: based on version {b}, the store is at version {current}");
        }
    }
    let version = current + 1;
    let record = ChangeRecord {
        ts: Micros(apus_schema::time::now_us()),
        kind: apus_schema::ChangeKind::Import.as_str().into(),
        actor: format!("cli:{}", std::env::var("USER").unwrap_or_default()),
        scope: "*".into(),
        from_version: current,
        to_version: version,
        summary: format!(
            "imported {} routes and {} pools from {}; {reason}",
            doc.routes.len(),
            doc.pools.len(),
            file.display()
        ),
        ..Default::default()
    };
    store
        .commit(Change {
            version,
            base_version: current,
            record,
            state: doc,
        })
        .await?;
    println!("imported as version {version}");
    Ok(())
}
