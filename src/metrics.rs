//! Classification metrics from a confusion matrix: accuracy, per-class
//! precision/recall/F1 and their macro and weighted averages, with
//! scikit-learn's conventions (a class with no predictions has precision 0).

/// Rows are true classes, columns predicted classes.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Confusion {
    pub counts: Vec<Vec<u64>>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClassScore {
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    pub support: u64,
}

impl Confusion {
    pub fn new(classes: usize) -> Self {
        Self {
            counts: vec![vec![0; classes]; classes],
        }
    }

    pub fn add(&mut self, truth: usize, predicted: usize) {
        self.counts[truth][predicted] += 1;
    }

    pub fn total(&self) -> u64 {
        self.counts.iter().flatten().sum()
    }

    pub fn accuracy(&self) -> f64 {
        let correct: u64 = (0..self.counts.len()).map(|i| self.counts[i][i]).sum();
        ratio(correct, self.total())
    }

    pub fn per_class(&self) -> Vec<ClassScore> {
        let k = self.counts.len();
        (0..k)
            .map(|c| {
                let tp = self.counts[c][c];
                let support: u64 = self.counts[c].iter().sum();
                let predicted: u64 = (0..k).map(|r| self.counts[r][c]).sum();
                let precision = ratio(tp, predicted);
                let recall = ratio(tp, support);
                let f1 = if precision + recall > 0.0 {
                    2.0 * precision * recall / (precision + recall)
                } else {
                    0.0
                };
                ClassScore {
                    precision,
                    recall,
                    f1,
                    support,
                }
            })
            .collect()
    }

    /// Unweighted mean of per-class F1 over classes that occur in the truth
    /// or the predictions (scikit-learn's `labels` default).
    pub fn macro_f1(&self) -> f64 {
        let k = self.counts.len();
        let scores = self.per_class();
        let present: Vec<f64> = (0..k)
            .filter(|&c| scores[c].support > 0 || (0..k).any(|r| self.counts[r][c] > 0))
            .map(|c| scores[c].f1)
            .collect();
        if present.is_empty() {
            0.0
        } else {
            present.iter().sum::<f64>() / present.len() as f64
        }
    }
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 { 0.0 } else { a as f64 / b as f64 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scores_match_hand_computation() {
        // truth:     0 0 0 1 1 2
        // predicted: 0 0 1 1 2 2
        let mut m = Confusion::new(3);
        for (t, p) in [(0, 0), (0, 0), (0, 1), (1, 1), (1, 2), (2, 2)] {
            m.add(t, p);
        }
        assert!((m.accuracy() - 4.0 / 6.0).abs() < 1e-12);
        let s = m.per_class();
        assert!((s[0].precision - 1.0).abs() < 1e-12);
        assert!((s[0].recall - 2.0 / 3.0).abs() < 1e-12);
        assert!((s[1].f1 - 0.5).abs() < 1e-12);
        assert!((s[2].precision - 0.5).abs() < 1e-12);
        // sklearn.metrics.f1_score([0,0,0,1,1,2], [0,0,1,1,2,2], average="macro") = 0.6556
        assert!((m.macro_f1() - (0.8 + 0.5 + 2.0 / 3.0) / 3.0).abs() < 1e-12);
    }

    #[test]
    fn absent_class_is_left_out_of_macro_average() {
        let mut m = Confusion::new(3);
        m.add(0, 0);
        m.add(1, 1);
        assert!((m.macro_f1() - 1.0).abs() < 1e-12);
    }
}
