//! Device slots: one per CUDA GPU (one trial per GPU at a time), or
//! `cpu_slots` CPU slots whose thread pools add up to the cores.

use crate::spec::{Devices, SchedulerConfig};
use anyhow::{Context, bail};
use candle_core::Device;

/// Where one trial at a time runs.
#[derive(Debug, Clone)]
pub struct Slot {
    pub device: Device,
    /// `cpu`, `cpu#1`, `cuda:0`, ...
    pub name: String,
    /// Size of this slot's thread pool.
    pub threads: usize,
}

fn cuda(ordinal: usize, name: &str) -> anyhow::Result<Device> {
    if !cfg!(feature = "cuda") {
        bail!(
            "device {name} asked for, but this fer-lab was built without CUDA; rebuild with `cargo build --release --features cuda` or use devices = \"cpu\""
        );
    }
    Device::new_cuda(ordinal).with_context(|| {
        format!("device {name} is not available (no CUDA GPU with that ordinal, or no driver)")
    })
}

/// Every CUDA GPU candle can open (none without the `cuda` feature).
fn all_gpus() -> Vec<(Device, String)> {
    if !cfg!(feature = "cuda") {
        return Vec::new();
    }
    (0..64)
        .map_while(|i| Device::new_cuda(i).ok().map(|d| (d, format!("cuda:{i}"))))
        .collect()
}

fn cpu_slots(n: usize, threads: usize) -> Vec<Slot> {
    let n = n.max(1);
    (0..n)
        .map(|i| Slot {
            device: Device::Cpu,
            name: if n == 1 {
                "cpu".into()
            } else {
                format!("cpu#{i}")
            },
            // Split the cores; the first slots take the remainder.
            threads: (threads / n + usize::from(i < threads % n)).max(1),
        })
        .collect()
}

/// The slots the scheduler section asks for; `threads` is the resolved
/// total CPU thread count.
pub fn resolve(cfg: &SchedulerConfig, threads: usize) -> anyhow::Result<Vec<Slot>> {
    let names: Vec<String> = match &cfg.devices {
        Devices::Named(n) => vec![n.clone()],
        Devices::List(l) => l.clone(),
    };
    let mut gpus = Vec::new();
    let mut want_cpu = false;
    for name in &names {
        match name.as_str() {
            "cpu" => want_cpu = true,
            "auto" => {
                let found = all_gpus();
                if found.is_empty() {
                    want_cpu = true;
                }
                gpus.extend(found);
            }
            other => {
                let ordinal: usize = other
                    .trim_start_matches("cuda:")
                    .parse()
                    .context("device ordinal")?;
                if gpus.iter().any(|(_, n)| n == other) {
                    bail!("device {other} is listed twice in scheduler.devices");
                }
                gpus.push((cuda(ordinal, other)?, other.to_string()));
            }
        }
    }
    let per_gpu = (threads / gpus.len().max(1)).max(1);
    let mut slots: Vec<Slot> = gpus
        .into_iter()
        .map(|(device, name)| Slot {
            device,
            name,
            threads: per_gpu,
        })
        .collect();
    if want_cpu {
        slots.extend(cpu_slots(cfg.cpu_slots, threads));
    }
    Ok(slots)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_slots_share_the_cores() {
        let cfg = SchedulerConfig {
            devices: Devices::Named("cpu".into()),
            cpu_slots: 2,
            ..SchedulerConfig::default()
        };
        let slots = resolve(&cfg, 5).unwrap();
        assert_eq!(slots.iter().map(|s| s.threads).collect::<Vec<_>>(), [3, 2]);
        assert_eq!(slots[1].name, "cpu#1");
        let one = resolve(
            &SchedulerConfig {
                cpu_slots: 1,
                ..cfg
            },
            2,
        )
        .unwrap();
        assert_eq!(
            (one.len(), one[0].threads, one[0].name.as_str()),
            (1, 2, "cpu")
        );
    }
}
