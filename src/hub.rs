//! `fer-lab weights pull`: the one place fer-lab goes online, and only when
//! asked. Files land in the Hugging Face cache (`HF_HOME`, default
//! `~/.cache/huggingface`), where `just reproduce-resnet101` and users'
//! specs can find them.

use anyhow::{Context, bail};
use hf_hub::api::sync::ApiBuilder;
use hf_hub::{Cache, Repo};
use std::path::PathBuf;

/// True when the user said not to go online (`HF_HUB_OFFLINE=1`).
pub fn offline() -> bool {
    std::env::var("HF_HUB_OFFLINE").is_ok_and(|v| matches!(v.trim(), "1" | "true" | "TRUE" | "yes"))
}

/// The cached copy of `file` from model repository `repo`, downloading it
/// if it is not cached yet. `cache`: a cache folder instead of the default.
pub fn pull(repo: &str, file: &str, cache: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    if repo.split('/').count() != 2 || repo.split('/').any(str::is_empty) {
        return Err(crate::cli::UsageError(format!(
            "weights pull: expected a repository id like timm/resnet101.tv_in1k, got {repo:?}"
        ))
        .into());
    }
    let cache = match cache {
        Some(dir) => Cache::new(dir),
        None => Cache::from_env(),
    };
    if let Some(path) = cache.model(repo.to_string()).get(file) {
        return Ok(path);
    }
    if offline() {
        bail!(
            "weights pull {repo}: {file} is not in the cache ({}) and HF_HUB_OFFLINE is set; \
             download it on a machine that is online, or point backbone.pretrained at a copy",
            cache.path().display()
        );
    }
    // from_env: honours HF_ENDPOINT (a mirror) as well as HF_HOME.
    let api = ApiBuilder::from_env()
        .with_cache_dir(cache.path().clone())
        .with_progress(true)
        .with_retries(0)
        .build()
        .context("weights pull: cannot set up the Hugging Face client")?;
    api.repo(Repo::model(repo.to_string()))
        .get(file)
        .map_err(|e| {
            anyhow::anyhow!(
                "weights pull {repo}/{file}: download failed ({e}); \
                 is this machine online and the repository public? \
                 (fer-lab only goes online for this command)"
            )
        })
}
