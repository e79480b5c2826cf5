//! Text renderings of one confusion matrix: scikit-learn's
//! `classification_report` (byte for byte) and the confusion matrix itself
//! as a table of counts and a row-normalised table.
//!
//! The report recomputes its figures from the counts the way scikit-learn
//! does (F1 as `2 tp / (true + predicted)`, averages summed in numpy's
//! pairwise order) rather than from [`Confusion::per_class`], so that a value
//! that lies on a rounding boundary prints the same digit as sklearn.

use crate::metrics::Confusion;
use std::fmt::Write as _;

/// The heading of the widest averaged row; the name column is at least this wide.
const LONGEST_HEADING: &str = "weighted avg";

/// scikit-learn's `classification_report(y_true, y_pred, labels=range(len(names)),
/// target_names=names, digits=digits)` text, byte for byte.
///
/// Every class of the matrix is listed, also those with no samples or no
/// predictions; a score whose denominator is 0 prints as 0 (sklearn's
/// `zero_division="warn"` value). The "accuracy" row fills only the f1-score
/// and support columns. Like sklearn's string, the text ends with one `'\n'`
/// (after the "weighted avg" row). A class without a name in `names` is
/// called by its index, as sklearn does without `target_names`; extra names
/// are ignored.
pub fn classification_report(confusion: &Confusion, names: &[String], digits: usize) -> String {
    let k = confusion.counts.len();
    let labels = class_names(k, names);
    let stats: Vec<Stats> = (0..k).map(|c| Stats::of(confusion, c)).collect();

    let name_width = labels.iter().map(|n| n.chars().count()).max().unwrap_or(0);
    let width = name_width.max(LONGEST_HEADING.len()).max(digits);

    let mut out = String::new();
    // `write!` into a String cannot fail; the results are ignored on purpose.
    let _ = write!(out, "{:>width$} ", "");
    for h in ["precision", "recall", "f1-score", "support"] {
        let _ = write!(out, " {h:>9}");
    }
    out.push_str("\n\n");
    let row = |out: &mut String, name: &str, p: f64, r: f64, f: f64, support: u64| {
        let _ = writeln!(
            out,
            "{name:>width$}  {p:>9.digits$} {r:>9.digits$} {f:>9.digits$} {support:>9}"
        );
    };
    for (name, s) in labels.iter().zip(&stats) {
        row(&mut out, name, s.precision, s.recall, s.f1, s.support);
    }
    out.push('\n');

    let total: u64 = stats.iter().map(|s| s.support).sum();
    let tp: u64 = stats.iter().map(|s| s.tp).sum();
    let predicted: u64 = stats.iter().map(|s| s.predicted).sum();
    // Micro-averaged F1 over all labels is the accuracy: 2 tp / (true + predicted).
    let accuracy = divide(2.0 * tp as f64, (total + predicted) as f64);
    let _ = writeln!(
        out,
        "{:>width$}  {:>9} {:>9} {accuracy:>9.digits$} {total:>9}",
        "accuracy", "", ""
    );

    let column = |f: fn(&Stats) -> f64| stats.iter().map(f).collect::<Vec<f64>>();
    let (p, r, f) = (
        column(|s| s.precision),
        column(|s| s.recall),
        column(|s| s.f1),
    );
    let weights: Vec<f64> = stats.iter().map(|s| s.support as f64).collect();
    row(&mut out, "macro avg", mean(&p), mean(&r), mean(&f), total);
    row(
        &mut out,
        "weighted avg",
        weighted_mean(&p, &weights),
        weighted_mean(&r, &weights),
        weighted_mean(&f, &weights),
        total,
    );
    out
}

/// The confusion matrix as text: a table of counts, a blank line, then the
/// row-normalised table (each row divided by its number of samples, so it
/// sums to 1; a row with no samples prints 0.000 throughout).
///
/// Rows are true classes, columns predicted classes, both labelled with the
/// class names (a class without a name in `names` is called by its index).
/// Every line ends with `'\n'`.
pub fn confusion_text(confusion: &Confusion, names: &[String]) -> String {
    let k = confusion.counts.len();
    let labels = class_names(k, names);
    let counts: Vec<Vec<u64>> = (0..k)
        .map(|r| (0..k).map(|c| cell(confusion, r, c)).collect())
        .collect();

    let count_text: Vec<Vec<String>> = counts
        .iter()
        .map(|row| row.iter().map(u64::to_string).collect())
        .collect();
    let share_text: Vec<Vec<String>> = counts
        .iter()
        .map(|row| {
            let support: u64 = row.iter().sum();
            row.iter()
                .map(|&n| format!("{:.3}", divide(n as f64, support as f64)))
                .collect()
        })
        .collect();

    let mut out = String::new();
    out.push_str("confusion matrix, counts (rows: true class, columns: predicted class)\n");
    table(&mut out, &labels, &count_text);
    out.push('\n');
    out.push_str("confusion matrix, row-normalised (each row: share of the true class)\n");
    table(&mut out, &labels, &share_text);
    out
}

/// Writes one labelled, right-aligned square table.
fn table(out: &mut String, labels: &[String], cells: &[Vec<String>]) {
    let label_width = labels
        .iter()
        .map(|l| l.chars().count())
        .chain(["true \\ predicted".len()])
        .max()
        .unwrap_or(0);
    let widths: Vec<usize> = labels
        .iter()
        .enumerate()
        .map(|(c, l)| {
            cells
                .iter()
                .filter_map(|row| row.get(c))
                .map(|s| s.chars().count())
                .chain([l.chars().count()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let _ = write!(out, "{:<label_width$}", "true \\ predicted");
    for (l, w) in labels.iter().zip(&widths) {
        let _ = write!(out, "  {l:>w$}");
    }
    out.push('\n');
    for (l, row) in labels.iter().zip(cells) {
        let _ = write!(out, "{l:>label_width$}");
        for (s, w) in row.iter().zip(&widths) {
            let _ = write!(out, "  {s:>w$}");
        }
        out.push('\n');
    }
}

/// The sufficient statistics of one class, and its scores as sklearn computes them.
struct Stats {
    tp: u64,
    predicted: u64,
    support: u64,
    precision: f64,
    recall: f64,
    f1: f64,
}

impl Stats {
    fn of(confusion: &Confusion, c: usize) -> Self {
        let k = confusion.counts.len();
        let tp = cell(confusion, c, c);
        let support: u64 = (0..k).map(|p| cell(confusion, c, p)).sum();
        let predicted: u64 = (0..k).map(|t| cell(confusion, t, c)).sum();
        Self {
            tp,
            predicted,
            support,
            precision: divide(tp as f64, predicted as f64),
            recall: divide(tp as f64, support as f64),
            f1: divide(2.0 * tp as f64, (support + predicted) as f64),
        }
    }
}

/// A count of the matrix; a ragged matrix reads as 0 where a row is short.
fn cell(confusion: &Confusion, truth: usize, predicted: usize) -> u64 {
    confusion
        .counts
        .get(truth)
        .and_then(|row| row.get(predicted))
        .copied()
        .unwrap_or(0)
}

/// `names[i]`, or the index where no name is given.
fn class_names(k: usize, names: &[String]) -> Vec<String> {
    (0..k)
        .map(|i| names.get(i).cloned().unwrap_or_else(|| i.to_string()))
        .collect()
}

/// `a / b`, and 0 when `b` is 0 (sklearn's `zero_division` value).
fn divide(a: f64, b: f64) -> f64 {
    if b == 0.0 { 0.0 } else { a / b }
}

/// numpy's mean: the pairwise sum divided by the length (0 for no values).
fn mean(values: &[f64]) -> f64 {
    divide(pairwise_sum(values), values.len() as f64)
}

/// numpy's `average(values, weights)`: the pairwise sum of the products over
/// the pairwise sum of the weights; sklearn falls back to the plain mean
/// when the weights sum to 0.
fn weighted_mean(values: &[f64], weights: &[f64]) -> f64 {
    let scale = pairwise_sum(weights);
    if scale == 0.0 {
        return mean(values);
    }
    let products: Vec<f64> = values.iter().zip(weights).map(|(v, w)| v * w).collect();
    pairwise_sum(&products) / scale
}

/// numpy's `add.reduce` for float64 (`pairwise_sum` in its loops): a plain
/// loop below 8 values, eight interleaved accumulators up to 128, halves
/// (rounded to a multiple of 8) above.
fn pairwise_sum(a: &[f64]) -> f64 {
    let n = a.len();
    if n < 8 {
        a.iter().fold(-0.0, |acc, x| acc + x)
    } else if n <= 128 {
        let mut r = [0.0f64; 8];
        r.copy_from_slice(&a[..8]);
        let whole = n - n % 8;
        for chunk in a[8..whole].chunks_exact(8) {
            for (acc, x) in r.iter_mut().zip(chunk) {
                *acc += x;
            }
        }
        let mut res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
        for x in &a[whole..] {
            res += x;
        }
        res
    } else {
        let mut half = n / 2;
        half -= half % 8;
        pairwise_sum(&a[..half]) + pairwise_sum(&a[half..])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairwise_sum_orders_like_numpy() {
        // np.sum([1e16] + [1.0] * 15) - 1e16 == 14.0: seven of the eight
        // accumulators keep their ones apart from 1e16 (the ulp there is 2),
        // while a left-to-right sum loses every one of them.
        let mut a = vec![1.0; 16];
        a[0] = 1e16;
        let left_to_right = a.iter().fold(0.0, |s, x| s + x);
        assert_eq!(left_to_right, 1e16);
        assert_eq!(pairwise_sum(&a) - 1e16, 14.0);
    }

    #[test]
    fn empty_matrix_does_not_panic() {
        let text = classification_report(&Confusion::new(0), &[], 2);
        assert!(text.contains("accuracy"));
        assert!(confusion_text(&Confusion::new(0), &[]).starts_with("confusion matrix"));
    }
}
