//! Learning-rate schedules, evaluated per epoch (PyTorch's `StepLR` and
//! `CosineAnnealingLR` with `eta_min = 0`, stepped once per epoch).

use crate::spec::{LrSchedule, TrainConfig};

/// The rate used during `epoch` (0-based).
pub fn lr_at(t: &TrainConfig, epoch: usize) -> f64 {
    match t.lr_schedule {
        LrSchedule::None => t.lr,
        LrSchedule::Step => t.lr * t.gamma.powi((epoch / t.step_size) as i32),
        LrSchedule::Cosine => {
            0.5 * t.lr * (1.0 + (std::f64::consts::PI * epoch as f64 / t.epochs as f64).cos())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules_follow_pytorch() {
        let mut t = TrainConfig {
            lr: 0.1,
            epochs: 4,
            step_size: 2,
            gamma: 0.5,
            ..TrainConfig::default()
        };
        assert_eq!(lr_at(&t, 3), 0.1);
        t.lr_schedule = LrSchedule::Step;
        assert_eq!(
            [lr_at(&t, 0), lr_at(&t, 1), lr_at(&t, 2), lr_at(&t, 3)],
            [0.1, 0.1, 0.05, 0.05]
        );
        t.lr_schedule = LrSchedule::Cosine;
        // CosineAnnealingLR(T_max=4): 0.1, 0.0854, 0.05, 0.0146
        let got: Vec<f64> = (0..4).map(|e| lr_at(&t, e)).collect();
        for (g, want) in got.iter().zip([0.1, 0.085_355_339, 0.05, 0.014_644_661]) {
            assert!((g - want).abs() < 1e-8, "{got:?}");
        }
    }
}
