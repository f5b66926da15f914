//! A raw file's rollup companions: where they live, writing them with the file, and
//! rebuilding missing ones (or deleting orphans) when a store opens.

use std::fs;
use std::path::PathBuf;

use datafusion::arrow::compute::concat_batches;
use datafusion::arrow::record_batch::RecordBatch;

use super::files::{hour_dir, read_parquet, write_parquet};
use super::{FileMeta, LocalStore};
use crate::rollup;
use crate::StoreError;
use apus_schema::Table;

impl LocalStore {
    /// The rollup files beside raw file `f` of `t`, one per rollup [`rollup::Level`] of `t`.
    pub(super) fn companions(&self, t: Table, f: &FileMeta) -> Vec<(rollup::Level, PathBuf)> {
        let Some(file) = f.path.file_name() else {
            return Vec::new();
        };
        rollup::levels(t)
            .iter()
            .map(|l| (*l, self.dir.join(l.name).join(hour_dir(f.hour)).join(file)))
            .collect()
    }

    /// Write each rollup of `rows` (the rows of raw file `f`) beside it; with `ext`, to
    /// that extension of each path (staging, for a rename later). The written paths.
    pub(super) fn write_rollups(
        &self,
        t: Table,
        f: &FileMeta,
        rows: &RecordBatch,
        ext: Option<&str>,
    ) -> Result<Vec<(PathBuf, PathBuf)>, StoreError> {
        write_levels(t, rows, self.companions(t, f), ext)
    }

    /// Give every committed raw file of `t` its rollups (files written before a rollup
    /// existed, or whose companion went missing) and delete rollups without a raw file.
    pub(super) fn repair_rollups(&self, t: Table, files: &[FileMeta]) -> Result<(), StoreError> {
        if rollup::levels(t).is_empty() {
            return Ok(());
        }
        let want: std::collections::HashSet<PathBuf> = files
            .iter()
            .flat_map(|f| self.companions(t, f))
            .map(|(_, p)| p)
            .collect();
        for level in rollup::levels(t) {
            let rdir = self.dir.join(level.name);
            fs::create_dir_all(&rdir)?;
            for day in fs::read_dir(&rdir)? {
                let day = day?.path();
                if !day.is_dir() {
                    continue;
                }
                for hour in fs::read_dir(&day)? {
                    for f in fs::read_dir(hour?.path())? {
                        let p = f?.path();
                        if !want.contains(&p) {
                            tracing::warn!(file = %p.display(), "removing rollup without its raw file");
                            fs::remove_file(&p)?;
                        }
                    }
                }
            }
        }
        let mut built = 0;
        for f in files {
            let missing: Vec<(rollup::Level, PathBuf)> = self
                .companions(t, f)
                .into_iter()
                .filter(|(_, p)| !p.exists())
                .collect();
            if missing.is_empty() {
                continue;
            }
            let batches = read_parquet(&f.path)?;
            let all = concat_batches(&t.schema(), &batches)
                .map_err(|e| StoreError::Store(e.to_string()))?;
            write_levels(t, &all, missing, None)?;
            built += 1;
        }
        if built > 0 {
            tracing::info!(table = t.name(), files = built, "built missing rollups");
        }
        Ok(())
    }
}

/// Write rollup `level` of `rows` (of `t`) to each target path (or to its `ext` extension,
/// for a rename later); the written and final paths.
fn write_levels(
    t: Table,
    rows: &RecordBatch,
    targets: Vec<(rollup::Level, PathBuf)>,
    ext: Option<&str>,
) -> Result<Vec<(PathBuf, PathBuf)>, StoreError> {
    let mut out = Vec::new();
    for (level, path) in targets {
        if let Some(b) = rollup::build_level(t, level, rows)? {
            if let Some(d) = path.parent() {
                fs::create_dir_all(d)?;
            }
            let at = ext.map_or_else(|| path.clone(), |x| path.with_extension(x));
            write_parquet(&at, &b)?;
            out.push((at, path));
        }
    }
    Ok(out)
}
