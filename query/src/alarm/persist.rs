//! The evaluator's own durable state: the on/off switches and the silences, each one JSON
//! file in the data dir, replaced atomically (write, fsync, rename) before a change is
//! acknowledged.

use std::collections::BTreeMap;
use std::path::Path;

use apus_rules::alarm::Silence;

const SWITCHES: &str = "switches.json";
const SILENCES: &str = "silences.json";

fn read<T: serde::de::DeserializeOwned + Default>(dir: &Path, name: &str) -> Result<T, String> {
    let p = dir.join(name);
    match std::fs::read(&p) {
        Ok(b) => serde_json::from_slice(&b).map_err(|e| format!("{}: {e}", p.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(T::default()),
        Err(e) => Err(format!("{}: {e}", p.display())),
    }
}

/// Load switches and silences (compiling the silences' regexes).
pub fn load(dir: &Path) -> Result<(BTreeMap<String, bool>, Vec<Silence>), String> {
    let switches = read(dir, SWITCHES)?;
    let mut silences: Vec<Silence> = read(dir, SILENCES)?;
    for s in &mut silences {
        for m in &mut s.matchers {
            m.compile()?;
        }
    }
    Ok((switches, silences))
}

pub fn save_switches(dir: &Path, s: &BTreeMap<String, bool>) -> Result<(), String> {
    let b = serde_json::to_vec_pretty(s).map_err(|e| e.to_string())?;
    apus_wal::write_atomic(&dir.join(SWITCHES), &b).map_err(|e| format!("{SWITCHES}: {e}"))
}

pub fn save_silences(dir: &Path, s: &[Silence]) -> Result<(), String> {
    let b = serde_json::to_vec_pretty(s).map_err(|e| e.to_string())?;
    apus_wal::write_atomic(&dir.join(SILENCES), &b).map_err(|e| format!("{SILENCES}: {e}"))
}
