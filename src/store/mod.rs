//! The SQLite store: schema, migrations and every read and write. Nothing
//! else in fer-lab writes SQL, and no rusqlite type leaves this module.
//!
//! WAL mode and a busy timeout let readers (`leaderboard`, `sqlite3`) look
//! while a sweep writes; each epoch is one short transaction, so a crash
//! leaves complete epochs only.

mod lease;
pub use lease::{Claim, LeasePolicy, StatusLine, owner_name};

use crate::spec::TrialPlan;
use crate::train::EpochRecord;
use rusqlite::{Connection, OptionalExtension, params};
use std::path::{Path, PathBuf};

/// Bumped with every schema change; `open` migrates older files forward.
pub const SCHEMA_VERSION: i64 = 3;

const SCHEMA_V1: &str = "
CREATE TABLE sweeps (
    id           INTEGER PRIMARY KEY,
    name         TEXT NOT NULL UNIQUE,
    spec_path    TEXT NOT NULL,
    spec_toml    TEXT NOT NULL,
    spec_sha256  TEXT NOT NULL,
    created_at   TEXT NOT NULL,
    updated_at   TEXT NOT NULL,
    code_version TEXT NOT NULL
);
CREATE TABLE trials (
    id               INTEGER PRIMARY KEY,
    sweep_id         INTEGER NOT NULL REFERENCES sweeps(id),
    key              TEXT NOT NULL UNIQUE,
    backbone         TEXT NOT NULL,
    params_json      TEXT NOT NULL,
    plan_json        TEXT NOT NULL,
    fold             INTEGER,
    seed             INTEGER NOT NULL,
    status           TEXT NOT NULL CHECK (status IN
                       ('pending','running','done','failed','diverged','pruned','interrupted')),
    device           TEXT,
    attempts         INTEGER NOT NULL DEFAULT 0,
    epochs_planned   INTEGER NOT NULL,
    heartbeat_at     TEXT,
    started_at       TEXT,
    finished_at      TEXT,
    best_epoch       INTEGER,
    best_val_acc     REAL,
    best_val_macro_f1 REAL,
    error            TEXT
);
CREATE INDEX trials_by_sweep ON trials(sweep_id);
CREATE TABLE epochs (
    trial_id       INTEGER NOT NULL REFERENCES trials(id),
    epoch          INTEGER NOT NULL,
    train_loss     REAL NOT NULL,
    train_acc      REAL NOT NULL,
    train_macro_f1 REAL NOT NULL,
    val_loss       REAL NOT NULL,
    val_acc        REAL NOT NULL,
    val_macro_f1   REAL NOT NULL,
    lr             REAL NOT NULL,
    seconds        REAL NOT NULL,
    images_per_sec REAL NOT NULL,
    finished_at    TEXT NOT NULL,
    PRIMARY KEY (trial_id, epoch)
);
";

/// Version 2: test-set scores, leakage and confusion matrices.
const SCHEMA_V2: &str = "
ALTER TABLE trials ADD COLUMN test_loss REAL;
ALTER TABLE trials ADD COLUMN test_acc REAL;
ALTER TABLE trials ADD COLUMN test_macro_f1 REAL;
ALTER TABLE trials ADD COLUMN leak_json TEXT;
ALTER TABLE trials ADD COLUMN notes TEXT;
CREATE TABLE confusions (
    trial_id     INTEGER NOT NULL REFERENCES trials(id),
    split        TEXT NOT NULL CHECK (split IN ('val', 'test')),
    epoch        INTEGER NOT NULL,
    classes_json TEXT NOT NULL,
    matrix_json  TEXT NOT NULL,
    PRIMARY KEY (trial_id, split)
);
";

/// Version 3: trial leases (which process runs a trial).
const SCHEMA_V3: &str = "
ALTER TABLE trials ADD COLUMN lease_owner TEXT;
";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database {path}: {source}")]
    Sqlite {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("cannot create the folder for database {path}: {source}")]
    Folder {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "database {path} has schema version {found}, newer than this fer-lab understands ({SCHEMA_VERSION}); upgrade fer-lab"
    )]
    TooNew { path: PathBuf, found: i64 },
    #[error("no trial matches {0:?}")]
    NoSuchTrial(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct SweepId(pub i64);

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TrialId(pub i64);

/// A trial's state; transitions are made only by the methods below.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrialStatus {
    Pending,
    Running,
    Done,
    Failed,
    Diverged,
    Pruned,
    Interrupted,
}

impl TrialStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Running => "running",
            Self::Done => "done",
            Self::Failed => "failed",
            Self::Diverged => "diverged",
            Self::Pruned => "pruned",
            Self::Interrupted => "interrupted",
        }
    }

    fn parse(s: &str) -> Self {
        match s {
            "running" => Self::Running,
            "done" => Self::Done,
            "failed" => Self::Failed,
            "diverged" => Self::Diverged,
            "pruned" => Self::Pruned,
            "interrupted" => Self::Interrupted,
            _ => Self::Pending,
        }
    }

    /// Finished for good: a re-run of the sweep skips these.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Done | Self::Diverged | Self::Pruned)
    }
}

/// One trial as the leaderboard sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct TrialRow {
    pub id: TrialId,
    pub key: String,
    pub sweep: String,
    pub backbone: String,
    pub params_json: String,
    pub status: TrialStatus,
    pub epochs_planned: usize,
    pub epochs_run: usize,
    pub best_epoch: Option<usize>,
    pub best_val_acc: Option<f64>,
    pub best_val_macro_f1: Option<f64>,
    pub wall_seconds: f64,
    pub error: Option<String>,
    pub fold: Option<usize>,
    pub test_acc: Option<f64>,
    pub test_macro_f1: Option<f64>,
    /// The split's leakage as JSON (see `data::split::Leak`), when known.
    pub leak_json: Option<String>,
}

impl TrialRow {
    /// The figure a trial is ranked by: test accuracy where a test set was
    /// scored, else the best validation accuracy. A k-fold trial has no
    /// score until its test fold is scored: its inner validation accuracy
    /// must never mix into a mean of test accuracies.
    pub fn score(&self) -> Option<(f64, Option<f64>)> {
        match (self.test_acc, self.fold) {
            (Some(acc), _) => Some((acc, self.test_macro_f1)),
            (None, Some(_)) => None,
            (None, None) => self.best_val_acc.map(|a| (a, self.best_val_macro_f1)),
        }
    }
}

/// A stored confusion matrix (rows true, columns predicted).
#[derive(Debug, Clone, PartialEq)]
pub struct StoredConfusion {
    pub split: String,
    pub epoch: usize,
    pub classes: Vec<String>,
    pub counts: Vec<Vec<u64>>,
}

pub struct Store {
    conn: Connection,
    path: PathBuf,
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

impl Store {
    /// Opens (creating if needed) the database and brings its schema up to date.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|source| StoreError::Folder {
                path: path.to_path_buf(),
                source,
            })?;
        }
        let conn = Connection::open(path).map_err(|source| StoreError::Sqlite {
            path: path.to_path_buf(),
            source,
        })?;
        let store = Self {
            conn,
            path: path.to_path_buf(),
        };
        store.setup()?;
        Ok(store)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn err(&self) -> impl Fn(rusqlite::Error) -> StoreError + '_ {
        |source| StoreError::Sqlite {
            path: self.path.clone(),
            source,
        }
    }

    /// Runs `f` in one transaction, committed when it returns Ok.
    pub(crate) fn transaction<T>(
        &mut self,
        f: impl FnOnce(&rusqlite::Transaction<'_>) -> rusqlite::Result<T>,
    ) -> Result<T, StoreError> {
        let path = self.path.clone();
        let wrap = |source| StoreError::Sqlite {
            path: path.clone(),
            source,
        };
        let tx = self.conn.transaction().map_err(wrap)?;
        let out = f(&tx).map_err(wrap)?;
        tx.commit().map_err(wrap)?;
        Ok(out)
    }

    fn setup(&self) -> Result<(), StoreError> {
        self.conn
            .busy_timeout(std::time::Duration::from_secs(30))
            .map_err(self.err())?;
        self.conn
            .execute_batch(
                "PRAGMA journal_mode = WAL; PRAGMA foreign_keys = ON; PRAGMA synchronous = NORMAL;",
            )
            .map_err(self.err())?;
        let version: i64 = self
            .conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(self.err())?;
        if version > SCHEMA_VERSION {
            return Err(StoreError::TooNew {
                path: self.path.clone(),
                found: version,
            });
        }
        for (target, sql) in [(1, SCHEMA_V1), (2, SCHEMA_V2), (3, SCHEMA_V3)] {
            if version < target {
                self.conn
                    .execute_batch(&format!(
                        "BEGIN; {sql} PRAGMA user_version = {target}; COMMIT;"
                    ))
                    .map_err(self.err())?;
            }
        }
        Ok(())
    }

    /// Records a sweep and its trials in one transaction. A sweep is found
    /// by name; a trial by its plan's key, so re-running a spec adds only
    /// new trials. Returns every plan's trial id and status.
    pub fn register(
        &mut self,
        name: &str,
        spec_path: &str,
        spec_toml: &str,
        plans: &[TrialPlan],
    ) -> Result<(SweepId, Vec<(TrialId, TrialStatus)>), StoreError> {
        self.transaction(|tx| {
            let sha = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(spec_toml.as_bytes()));
            let at = now();
            tx.execute(
                "INSERT INTO sweeps (name, spec_path, spec_toml, spec_sha256, created_at, updated_at, code_version)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?5, ?6)
                 ON CONFLICT(name) DO UPDATE SET spec_path = ?2, spec_toml = ?3, spec_sha256 = ?4, updated_at = ?5, code_version = ?6",
                params![name, spec_path, spec_toml, sha, at, env!("CARGO_PKG_VERSION")],
            )?;
            let sweep: i64 = tx
                .query_row("SELECT id FROM sweeps WHERE name = ?1", [name], |r| {
                    r.get(0)
                })?;
            let mut out = Vec::new();
            for plan in plans {
                tx.execute(
                    "INSERT INTO trials (sweep_id, key, backbone, params_json, plan_json, seed, status, epochs_planned, fold)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'pending', ?7, ?8) ON CONFLICT(key) DO NOTHING",
                    params![sweep, plan.key(), plan.backbone.name, plan.params_json(), plan.to_json(), plan.seed as i64, plan.train.epochs as i64, plan.fold.map(|f| f as i64)],
                )?;
                let (id, status): (i64, String) = tx
                    .query_row(
                        "SELECT id, status FROM trials WHERE key = ?1",
                        [plan.key()],
                        |r| Ok((r.get(0)?, r.get(1)?)),
                    )?;
                out.push((TrialId(id), TrialStatus::parse(&status)));
            }
            Ok((SweepId(sweep), out))
        })
    }

    /// Marks a trial running on `device`. Epochs after `resume_after` (the
    /// last checkpointed epoch; 0 = start over) from an earlier attempt are
    /// removed, so the table never holds an epoch the weights do not.
    pub fn start_trial(
        &mut self,
        id: TrialId,
        device: &str,
        resume_after: usize,
    ) -> Result<(), StoreError> {
        self.transaction(|tx| {
            // Epochs past the checkpoint are trained again (deterministically).
            tx.execute(
                "DELETE FROM epochs WHERE trial_id = ?1 AND epoch > ?2",
                params![id.0, resume_after as i64],
            )?;
            tx.execute("DELETE FROM confusions WHERE trial_id = ?1", [id.0])?;
            let at = now();
            tx.execute(
                "UPDATE trials SET status = 'running', device = ?2, attempts = attempts + 1, started_at = ?3,
                 heartbeat_at = ?3, finished_at = NULL, error = NULL, test_loss = NULL, test_acc = NULL,
                 test_macro_f1 = NULL, notes = NULL,
                 (best_epoch, best_val_acc, best_val_macro_f1) =
                   (SELECT epoch, val_acc, val_macro_f1 FROM epochs WHERE trial_id = ?1
                    ORDER BY val_acc DESC, epoch ASC LIMIT 1)
                 WHERE id = ?1",
                params![id.0, device, at],
            )?;
            Ok(())
        })
    }

    /// Puts trials back to `pending` with no epochs (`sweep --fresh`).
    pub fn reset_trials(&mut self, ids: &[TrialId]) -> Result<(), StoreError> {
        self.transaction(|tx| {
            for id in ids {
                tx.execute("DELETE FROM epochs WHERE trial_id = ?1", [id.0])?;
                tx.execute("DELETE FROM confusions WHERE trial_id = ?1", [id.0])?;
                tx.execute(
                    "UPDATE trials SET status = 'pending', finished_at = NULL, best_epoch = NULL, best_val_acc = NULL,
                     best_val_macro_f1 = NULL, error = NULL, test_loss = NULL, test_acc = NULL, test_macro_f1 = NULL,
                     notes = NULL WHERE id = ?1",
                    [id.0],
                )?;
            }
            Ok(())
        })
    }

    /// Stores one finished epoch and the trial's best-so-far, atomically.
    pub fn record_epoch(&mut self, id: TrialId, r: &EpochRecord) -> Result<(), StoreError> {
        self.transaction(|tx| {
            let at = now();
            tx.execute(
                "INSERT INTO epochs (trial_id, epoch, train_loss, train_acc, train_macro_f1, val_loss, val_acc,
                 val_macro_f1, lr, seconds, images_per_sec, finished_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
                params![id.0, r.epoch as i64, r.train_loss, r.train_acc, r.train_macro_f1, r.val_loss, r.val_acc, r.val_macro_f1, r.lr, r.seconds, r.images_per_sec, at],
            )?;
            // Best epoch by validation accuracy; the earliest wins ties.
            tx.execute(
                "UPDATE trials SET heartbeat_at = ?2,
                   (best_epoch, best_val_acc, best_val_macro_f1) =
                   (SELECT epoch, val_acc, val_macro_f1 FROM epochs WHERE trial_id = ?1
                    ORDER BY val_acc DESC, epoch ASC LIMIT 1)
                 WHERE id = ?1",
                params![id.0, at],
            )?;
            Ok(())
        })
    }

    /// Ends a trial in `status` (done, failed, diverged, pruned, interrupted).
    pub fn finish_trial(
        &mut self,
        id: TrialId,
        status: TrialStatus,
        error: Option<&str>,
    ) -> Result<(), StoreError> {
        self.conn
            .execute(
                "UPDATE trials SET status = ?2, finished_at = ?3, error = ?4 WHERE id = ?1",
                params![id.0, status.as_str(), now(), error],
            )
            .map_err(self.err())?;
        Ok(())
    }

    /// Trials of one sweep (or all), best validation accuracy first.
    pub fn trials(&self, sweep: Option<&str>) -> Result<Vec<TrialRow>, StoreError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT t.id, t.key, s.name, t.backbone, t.params_json, t.status, t.epochs_planned,
                        (SELECT COUNT(*) FROM epochs e WHERE e.trial_id = t.id),
                        t.best_epoch, t.best_val_acc, t.best_val_macro_f1,
                        (SELECT COALESCE(SUM(seconds), 0) FROM epochs e WHERE e.trial_id = t.id), t.error,
                        t.fold, t.test_acc, t.test_macro_f1, t.leak_json
                 FROM trials t JOIN sweeps s ON s.id = t.sweep_id
                 WHERE ?1 IS NULL OR s.name = ?1
                 ORDER BY COALESCE(t.test_acc, t.best_val_acc) IS NULL, COALESCE(t.test_acc, t.best_val_acc) DESC,
                          t.best_val_macro_f1 DESC, t.id",
            )
            .map_err(self.err())?;
        let rows = stmt
            .query_map([sweep], |r| {
                Ok(TrialRow {
                    id: TrialId(r.get(0)?),
                    key: r.get(1)?,
                    sweep: r.get(2)?,
                    backbone: r.get(3)?,
                    params_json: r.get(4)?,
                    status: TrialStatus::parse(&r.get::<_, String>(5)?),
                    epochs_planned: r.get::<_, i64>(6)? as usize,
                    epochs_run: r.get::<_, i64>(7)? as usize,
                    best_epoch: r.get::<_, Option<i64>>(8)?.map(|e| e as usize),
                    best_val_acc: r.get(9)?,
                    best_val_macro_f1: r.get(10)?,
                    wall_seconds: r.get(11)?,
                    error: r.get(12)?,
                    fold: r.get::<_, Option<i64>>(13)?.map(|f| f as usize),
                    test_acc: r.get(14)?,
                    test_macro_f1: r.get(15)?,
                    leak_json: r.get(16)?,
                })
            })
            .map_err(self.err())?;
        rows.collect::<Result<_, _>>().map_err(self.err())
    }

    /// Records a note about the trial (leakage, pretrained weights), shown by `report`.
    pub fn set_leak(&mut self, id: TrialId, leak_json: &str) -> Result<(), StoreError> {
        self.conn
            .execute(
                "UPDATE trials SET leak_json = ?2 WHERE id = ?1",
                params![id.0, leak_json],
            )
            .map_err(self.err())?;
        Ok(())
    }

    /// Appends a line to the trial's notes.
    pub fn add_note(&mut self, id: TrialId, note: &str) -> Result<(), StoreError> {
        self.conn
            .execute(
                "UPDATE trials SET notes = CASE WHEN notes IS NULL THEN ?2 ELSE notes || char(10) || ?2 END WHERE id = ?1",
                params![id.0, note],
            )
            .map_err(self.err())?;
        Ok(())
    }

    pub fn notes(&self, id: TrialId) -> Result<Option<String>, StoreError> {
        self.conn
            .query_row("SELECT notes FROM trials WHERE id = ?1", [id.0], |r| {
                r.get(0)
            })
            .map_err(self.err())
    }

    /// Stores the scores of a finished trial: the best epoch's validation
    /// confusion and, where a test set was scored, its results.
    pub fn record_scores(
        &mut self,
        id: TrialId,
        classes: &[String],
        best_epoch: usize,
        val: &crate::metrics::Confusion,
        test: Option<(f64, &crate::metrics::Confusion)>,
    ) -> Result<(), StoreError> {
        self.transaction(|tx| {
            let classes_json = serde_json::to_string(classes).expect("strings serialise");
            let put = |split: &str, m: &crate::metrics::Confusion| {
                tx.execute(
                    "INSERT OR REPLACE INTO confusions (trial_id, split, epoch, classes_json, matrix_json) VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![id.0, split, best_epoch as i64, classes_json, serde_json::to_string(&m.counts).expect("counts serialise")],
                )
                .map(|_| ())
            };
            put("val", val)?;
            if let Some((loss, m)) = test {
                put("test", m)?;
                tx.execute(
                    "UPDATE trials SET test_loss = ?2, test_acc = ?3, test_macro_f1 = ?4 WHERE id = ?1",
                    params![id.0, loss, m.accuracy(), m.macro_f1()],
                )?;
            }
            Ok(())
        })
    }

    /// The stored confusion matrices of a trial (`val`, then `test`).
    pub fn confusions(&self, id: TrialId) -> Result<Vec<StoredConfusion>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT split, epoch, classes_json, matrix_json FROM confusions WHERE trial_id = ?1 ORDER BY split DESC")
            .map_err(self.err())?;
        let rows = stmt
            .query_map([id.0], |r| {
                let classes: String = r.get(2)?;
                let matrix: String = r.get(3)?;
                Ok(StoredConfusion {
                    split: r.get(0)?,
                    epoch: r.get::<_, i64>(1)? as usize,
                    classes: serde_json::from_str(&classes).unwrap_or_default(),
                    counts: serde_json::from_str(&matrix).unwrap_or_default(),
                })
            })
            .map_err(self.err())?;
        rows.collect::<Result<_, _>>().map_err(self.err())
    }

    /// Every stored epoch of a trial, in order.
    pub fn epochs(&self, id: TrialId) -> Result<Vec<EpochRecord>, StoreError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT epoch, train_loss, train_acc, train_macro_f1, val_loss, val_acc, val_macro_f1, lr,
                        seconds, images_per_sec FROM epochs WHERE trial_id = ?1 ORDER BY epoch",
            )
            .map_err(self.err())?;
        let rows = stmt
            .query_map([id.0], |r| {
                Ok(EpochRecord {
                    epoch: r.get::<_, i64>(0)? as usize,
                    train_loss: r.get(1)?,
                    train_acc: r.get(2)?,
                    train_macro_f1: r.get(3)?,
                    val_loss: r.get(4)?,
                    val_acc: r.get(5)?,
                    val_macro_f1: r.get(6)?,
                    lr: r.get(7)?,
                    seconds: r.get(8)?,
                    images_per_sec: r.get(9)?,
                })
            })
            .map_err(self.err())?;
        rows.collect::<Result<_, _>>().map_err(self.err())
    }

    /// The resolved spec (TOML) a sweep last ran with.
    pub fn sweep_spec(&self, name: &str) -> Result<Option<String>, StoreError> {
        self.conn
            .query_row(
                "SELECT spec_toml FROM sweeps WHERE name = ?1",
                [name],
                |r| r.get(0),
            )
            .optional()
            .map_err(self.err())
    }

    /// Names of stored sweeps, oldest first.
    pub fn sweep_names(&self) -> Result<Vec<String>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT name FROM sweeps ORDER BY id")
            .map_err(self.err())?;
        let rows = stmt.query_map([], |r| r.get(0)).map_err(self.err())?;
        rows.collect::<Result<_, _>>().map_err(self.err())
    }

    /// The stored plan of a trial, by id.
    pub fn plan_json(&self, id: TrialId) -> Result<String, StoreError> {
        self.conn
            .query_row("SELECT plan_json FROM trials WHERE id = ?1", [id.0], |r| {
                r.get(0)
            })
            .optional()
            .map_err(self.err())?
            .ok_or_else(|| StoreError::NoSuchTrial(id.0.to_string()))
    }
}
