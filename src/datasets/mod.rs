//! Tabular classification datasets: a [`Table`] of `f32` features and `u32` labels, the CSV
//! reader and writer for the course's "Europe" splits ([`read_csv`], [`write_csv`]), and
//! [`synthetic_map`], a seeded generator of a Europe-like map with the same schema, size and
//! difficulty, which serves as the default dataset when the real one is not at hand. Images:
//! [`images`] loads the ImageFolder layout, [`faces`] generates the default real-vs-fake set and
//! the pretraining source task.

mod europe;
pub mod faces;
pub mod images;
mod synthetic_map;

pub use europe::{read_csv, write_csv};
pub use synthetic_map::{MAX_CLASSES, MapConfig, synthetic_map};

/// A classification dataset held in memory: `len()` rows of `dim()` features and one label each.
#[derive(Debug, Clone, PartialEq)]
pub struct Table {
    /// Feature column names, in the order of each row of `x`.
    pub features: Vec<String>,
    /// Label column name.
    pub label: String,
    /// Features, row-major: row `i` is `x[i * dim .. (i + 1) * dim]`.
    pub x: Vec<f32>,
    /// Class index of each row.
    pub y: Vec<u32>,
}

impl Table {
    /// Number of rows.
    pub fn len(&self) -> usize {
        self.y.len()
    }

    /// Number of features per row.
    pub fn dim(&self) -> usize {
        self.features.len()
    }

    /// Whether the table has no rows.
    pub fn is_empty(&self) -> bool {
        self.y.is_empty()
    }

    /// The features of row `i`.
    pub fn row(&self, i: usize) -> &[f32] {
        let d = self.dim();
        &self.x[i * d..(i + 1) * d]
    }

    /// Number of classes, taken as one more than the largest label (0 for an empty table).
    pub fn n_classes(&self) -> usize {
        self.y.iter().max().map_or(0, |&m| m as usize + 1)
    }

    /// Rows per class, indexed by label, `n_classes()` long.
    pub fn class_counts(&self) -> Vec<usize> {
        let mut counts = vec![0; self.n_classes()];
        for &c in &self.y {
            counts[c as usize] += 1;
        }
        counts
    }
}
