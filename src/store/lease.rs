//! Trial leases: which process runs which trial. A worker claims the next
//! runnable trial in one IMMEDIATE transaction (so two processes on one
//! database never take the same trial), keeps a heartbeat while it runs, and
//! a trial whose process died (stale heartbeat, or a lease of a dead process
//! on this host) is taken back by the next claim.

use super::{Store, StoreError, TrialId, TrialStatus, now};
use rusqlite::{OptionalExtension, TransactionBehavior, params};

/// When a trial may be (re)started.
#[derive(Debug, Clone, Copy)]
pub struct LeasePolicy {
    /// Failed trials are retried until they have been started this often.
    pub max_attempts: usize,
    /// A running trial whose heartbeat is older than this is taken back.
    pub stale_after_secs: u64,
}

/// A claimed trial, and how it was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    pub id: TrialId,
    /// The state it was claimed from (pending, failed, interrupted, running = recovered).
    pub from: TrialStatus,
    pub attempts: usize,
}

/// This process's lease name: `host:pid`.
pub fn owner_name() -> String {
    format!("{}:{}", host(), std::process::id())
}

fn host() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".into())
}

/// True when `owner` names a process on this host that no longer exists.
fn owner_is_dead(owner: &str) -> bool {
    let Some((h, pid)) = owner.rsplit_once(':') else {
        return false;
    };
    h == host()
        && pid.parse::<u32>().is_ok_and(|p| {
            p != std::process::id() && !std::path::Path::new(&format!("/proc/{p}")).exists()
        })
}

fn age_secs(rfc3339: &str) -> Option<i64> {
    let t = chrono::DateTime::parse_from_rfc3339(rfc3339).ok()?;
    Some((chrono::Utc::now() - t.with_timezone(&chrono::Utc)).num_seconds())
}

/// A trial's validation accuracy after each epoch (index 0 = epoch 1).
#[derive(Debug, Clone, PartialEq)]
pub struct History {
    pub trial: TrialId,
    pub fold: Option<usize>,
    pub status: TrialStatus,
    pub val_acc: Vec<f64>,
}

/// One running or queued trial, for `fer-lab status`.
#[derive(Debug, Clone, PartialEq)]
pub struct StatusLine {
    pub sweep: String,
    pub trial: TrialId,
    pub backbone: String,
    pub params_json: String,
    pub fold: Option<usize>,
    pub status: TrialStatus,
    pub device: Option<String>,
    pub owner: Option<String>,
    pub epochs_done: usize,
    pub epochs_planned: usize,
    pub mean_epoch_seconds: Option<f64>,
    pub heartbeat_age_secs: Option<i64>,
}

impl Store {
    /// Claims the first runnable trial among `candidates` (in their order)
    /// for `owner` on `device`: pending, interrupted, failed with attempts
    /// left, or running but abandoned (stale heartbeat or dead owner).
    pub fn claim_next(
        &mut self,
        candidates: &[TrialId],
        owner: &str,
        device: &str,
        policy: LeasePolicy,
    ) -> Result<Option<Claim>, StoreError> {
        let path = self.path.clone();
        let wrap = |source| StoreError::Sqlite {
            path: path.clone(),
            source,
        };
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(wrap)?;
        let mut claimed = None;
        for id in candidates {
            let row: Option<(String, i64, Option<String>, Option<String>)> = tx
                .query_row(
                    "SELECT status, attempts, heartbeat_at, lease_owner FROM trials WHERE id = ?1",
                    [id.0],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
                )
                .optional()
                .map_err(wrap)?;
            let Some((status, attempts, heartbeat, lease)) = row else {
                continue;
            };
            let status = TrialStatus::parse(&status);
            let attempts = attempts as usize;
            let runnable = match status {
                TrialStatus::Pending | TrialStatus::Interrupted => true,
                TrialStatus::Failed => attempts < policy.max_attempts,
                TrialStatus::Running => {
                    let stale = heartbeat
                        .as_deref()
                        .and_then(age_secs)
                        .is_none_or(|a| a > policy.stale_after_secs as i64);
                    stale || lease.as_deref().is_some_and(owner_is_dead)
                }
                _ => false,
            };
            if !runnable {
                continue;
            }
            let at = now();
            tx.execute(
                "UPDATE trials SET status = 'running', lease_owner = ?2, device = ?3, attempts = attempts + 1,
                 started_at = ?4, heartbeat_at = ?4, finished_at = NULL, error = NULL WHERE id = ?1",
                params![id.0, owner, device, at],
            )
            .map_err(wrap)?;
            claimed = Some(Claim {
                id: *id,
                from: status,
                attempts: attempts + 1,
            });
            break;
        }
        tx.commit().map_err(wrap)?;
        Ok(claimed)
    }

    /// Prepares a claimed trial's new attempt: epochs after `resume_after`
    /// (its last checkpoint; 0 = start over) and derived results are cleared.
    pub fn begin_attempt(&mut self, id: TrialId, resume_after: usize) -> Result<(), StoreError> {
        self.transaction(|tx| {
            tx.execute("DELETE FROM epochs WHERE trial_id = ?1 AND epoch > ?2", params![id.0, resume_after as i64])?;
            tx.execute("DELETE FROM confusions WHERE trial_id = ?1", [id.0])?;
            tx.execute(
                "UPDATE trials SET test_loss = NULL, test_acc = NULL, test_macro_f1 = NULL, notes = NULL,
                 (best_epoch, best_val_acc, best_val_macro_f1) =
                   (SELECT epoch, val_acc, val_macro_f1 FROM epochs WHERE trial_id = ?1
                    ORDER BY val_acc DESC, epoch ASC LIMIT 1)
                 WHERE id = ?1",
                [id.0],
            )?;
            Ok(())
        })
    }

    /// Moves the heartbeat of every trial `owner` is running.
    pub fn heartbeat(&mut self, owner: &str) -> Result<(), StoreError> {
        self.conn
            .execute(
                "UPDATE trials SET heartbeat_at = ?2 WHERE lease_owner = ?1 AND status = 'running'",
                params![owner, now()],
            )
            .map_err(self.err())?;
        Ok(())
    }

    /// Validation-accuracy histories of a sweep's trials, for pruners.
    pub fn histories(&self, sweep: &str) -> Result<Vec<History>, StoreError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT t.id, t.fold, t.status, e.val_acc FROM trials t JOIN sweeps s ON s.id = t.sweep_id
                 LEFT JOIN epochs e ON e.trial_id = t.id WHERE s.name = ?1 ORDER BY t.id, e.epoch",
            )
            .map_err(self.err())?;
        let mut out: Vec<History> = Vec::new();
        let rows = stmt
            .query_map([sweep], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, Option<i64>>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, Option<f64>>(3)?,
                ))
            })
            .map_err(self.err())?;
        for row in rows {
            let (id, fold, status, acc) = row.map_err(self.err())?;
            if out.last().is_none_or(|l| l.trial.0 != id) {
                out.push(History {
                    trial: TrialId(id),
                    fold: fold.map(|f| f as usize),
                    status: TrialStatus::parse(&status),
                    val_acc: Vec::new(),
                });
            }
            if let Some(a) = acc {
                out.last_mut().expect("pushed above").val_acc.push(a);
            }
        }
        Ok(out)
    }

    /// Every trial of every sweep (or one), for `fer-lab status`.
    pub fn status_lines(&self, sweep: Option<&str>) -> Result<Vec<StatusLine>, StoreError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT s.name, t.id, t.backbone, t.params_json, t.fold, t.status, t.device, t.lease_owner,
                        (SELECT COUNT(*) FROM epochs e WHERE e.trial_id = t.id), t.epochs_planned,
                        (SELECT AVG(seconds) FROM epochs e WHERE e.trial_id = t.id), t.heartbeat_at
                 FROM trials t JOIN sweeps s ON s.id = t.sweep_id
                 WHERE ?1 IS NULL OR s.name = ?1 ORDER BY s.id, t.id",
            )
            .map_err(self.err())?;
        let rows = stmt
            .query_map([sweep], |r| {
                Ok(StatusLine {
                    sweep: r.get(0)?,
                    trial: TrialId(r.get(1)?),
                    backbone: r.get(2)?,
                    params_json: r.get(3)?,
                    fold: r.get::<_, Option<i64>>(4)?.map(|f| f as usize),
                    status: TrialStatus::parse(&r.get::<_, String>(5)?),
                    device: r.get(6)?,
                    owner: r.get(7)?,
                    epochs_done: r.get::<_, i64>(8)? as usize,
                    epochs_planned: r.get::<_, i64>(9)? as usize,
                    mean_epoch_seconds: r.get(10)?,
                    heartbeat_age_secs: r
                        .get::<_, Option<String>>(11)?
                        .as_deref()
                        .and_then(age_secs),
                })
            })
            .map_err(self.err())?;
        rows.collect::<Result<_, _>>().map_err(self.err())
    }
}
