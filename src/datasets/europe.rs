//! CSV splits in the course's "Europe" schema: an unnamed row-index column, feature columns,
//! an integer class column (`,long,lat,country`).

use std::fmt::Write as _;
use std::fs::File;
use std::path::Path;

use anyhow::{Context, Result, bail};
use csv::ByteRecord;

use super::Table;

/// Reads a split. Handles the unnamed leading index column. Rejects, with file and line number in
/// the message: ragged rows, non-numeric feature values (quote the value), non-integer or negative
/// labels, an empty file, missing columns (name them, list the header, suggest the closest column
/// name).
///
/// Columns are found by name, so their order in the file does not matter and unused columns are
/// skipped. A leading index column is recognised either by an empty header name (pandas'
/// `to_csv`) or by data rows having one field more than the header (R's `write.table`).
pub fn read_csv(path: &Path, features: &[String], label: &str) -> Result<Table> {
    let shown = path.display();
    let file = File::open(path).with_context(|| format!("cannot open {shown}"))?;
    // Flexible: ragged rows are reported below with their line number instead of csv's message.
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .buffer_capacity(1 << 16)
        .from_reader(file);
    let mut read = |record: &mut ByteRecord| {
        reader
            .read_byte_record(record)
            .with_context(|| format!("cannot read {shown}"))
    };

    let mut header = ByteRecord::new();
    if !read(&mut header)? {
        bail!("{shown}: empty file; expected a header line naming the columns");
    }
    let mut names: Vec<String> = header
        .iter()
        .map(|f| String::from_utf8_lossy(f).trim().to_string())
        .collect();
    // Spreadsheet programs prefix UTF-8 files with a byte-order mark.
    if let Some(first) = names.first_mut() {
        *first = first.trim_start_matches('\u{feff}').trim().to_string();
    }
    let header_line = line_of(&header);

    let mut record = ByteRecord::new();
    if !read(&mut record)? {
        bail!("{shown}: no data rows after the header (line {header_line})");
    }
    // Data rows one field longer than the header carry an index column the header does not name.
    let shift = usize::from(record.len() == names.len() + 1);
    let width = names.len() + shift;

    let find = |name: &str| -> Result<Option<usize>> {
        let mut hits = names.iter().enumerate().filter(|(_, n)| *n == name);
        match (hits.next(), hits.next()) {
            (Some((i, _)), None) => Ok(Some(i + shift)),
            (Some((i, _)), Some((j, _))) => bail!(
                "{shown}:{header_line}: column `{name}` appears more than once in the header \
                 (columns {} and {})",
                i + 1,
                j + 1
            ),
            (None, _) => Ok(None),
        }
    };
    let mut missing = Vec::new();
    let mut feature_cols = Vec::with_capacity(features.len());
    for name in features {
        match find(name)? {
            Some(i) => feature_cols.push(i),
            None => missing.push(name.as_str()),
        }
    }
    let label_col = find(label)?;
    if label_col.is_none() {
        missing.push(label);
    }
    let Some(label_col) = label_col.filter(|_| missing.is_empty()) else {
        let listed: Vec<String> = missing
            .iter()
            .map(|m| format!("`{m}`{}", did_you_mean(m, &names)))
            .collect();
        let columns: Vec<String> = names
            .iter()
            .map(|n| {
                if n.is_empty() {
                    "(unnamed)".to_string()
                } else {
                    format!("`{n}`")
                }
            })
            .collect();
        bail!(
            "{shown}:{header_line}: missing column{} {}; the header has {}",
            if missing.len() == 1 { "" } else { "s" },
            listed.join(", "),
            columns.join(", ")
        );
    };

    let mut x = Vec::new();
    let mut y = Vec::new();
    loop {
        let line = line_of(&record);
        if record.len() != width {
            bail!(
                "{shown}:{line}: {} fields, but {} expected ({} columns in the header{})",
                record.len(),
                width,
                names.len(),
                if shift == 1 { " plus an index" } else { "" }
            );
        }
        for (&col, name) in feature_cols.iter().zip(features) {
            let field = &record[col];
            match parse_f32(field) {
                Some(v) => x.push(v),
                None => bail!(
                    "{shown}:{line}: column `{name}`: {:?} is not a finite number",
                    String::from_utf8_lossy(field)
                ),
            }
        }
        let field = &record[label_col];
        match parse_label(field) {
            Ok(c) => y.push(c),
            Err(why) => bail!(
                "{shown}:{line}: column `{label}`: label {:?} {why}",
                String::from_utf8_lossy(field)
            ),
        }
        if !read(&mut record)? {
            break;
        }
    }

    Ok(Table {
        features: features.to_vec(),
        label: label.to_string(),
        x,
        y,
    })
}

/// Writes the same schema: unnamed index column, the features, the label.
pub fn write_csv(path: &Path, table: &Table) -> Result<()> {
    let shown = path.display();
    let (n, d) = (table.len(), table.dim());
    if table.x.len() != n * d {
        bail!(
            "cannot write {shown}: table has {} feature values, expected {n} rows × {d} features",
            table.x.len()
        );
    }
    let mut writer = csv::WriterBuilder::new()
        .buffer_capacity(1 << 16)
        .from_path(path)
        .with_context(|| format!("cannot create {shown}"))?;
    let fail = |e: csv::Error| anyhow::Error::new(e).context(format!("cannot write {shown}"));

    let header = std::iter::once("")
        .chain(table.features.iter().map(String::as_str))
        .chain(std::iter::once(table.label.as_str()));
    writer.write_record(header).map_err(fail)?;
    // One reused buffer; `{}` on f32 is the shortest text that parses back to the same value.
    let mut field = String::new();
    for i in 0..n {
        field.clear();
        let _ = write!(field, "{i}");
        writer.write_field(&field).map_err(fail)?;
        for v in table.row(i) {
            field.clear();
            let _ = write!(field, "{v}");
            writer.write_field(&field).map_err(fail)?;
        }
        field.clear();
        let _ = write!(field, "{}", table.y[i]);
        writer.write_field(&field).map_err(fail)?;
        writer.write_record(None::<&[u8]>).map_err(fail)?;
    }
    writer
        .flush()
        .with_context(|| format!("cannot write {shown}"))
}

/// 1-based line on which a record starts (0 if csv did not track it, which it always does).
fn line_of(record: &ByteRecord) -> u64 {
    record.position().map_or(0, |p| p.line())
}

fn parse_f32(field: &[u8]) -> Option<f32> {
    // std's float parser is the Eisel-Lemire fast path; UTF-8 validation of a short ASCII
    // field is a few instructions.
    let v: f32 = std::str::from_utf8(field.trim_ascii()).ok()?.parse().ok()?;
    v.is_finite().then_some(v)
}

/// Most classes a label column may have: labels index per-class tables, so a stray huge value
/// must be an error, not a multi-gigabyte allocation.
pub const MAX_CLASSES: u32 = 10_000;

fn parse_label(field: &[u8]) -> Result<u32, &'static str> {
    let text = std::str::from_utf8(field.trim_ascii()).map_err(|_| "is not valid UTF-8")?;
    if let Ok(c) = text.parse::<u32>() {
        if c >= MAX_CLASSES {
            return Err("is too large: class indices are 0, 1, 2, … below 10000");
        }
        return Ok(c);
    }
    // Say why, so that `-1` and `2.5` are not both just "invalid".
    match text.parse::<f64>() {
        Ok(v) if v < 0.0 => Err("is negative; labels are class indices 0, 1, 2, …"),
        Ok(v) if v.fract() != 0.0 => Err("is not an integer; labels are class indices 0, 1, 2, …"),
        Ok(v) if v.is_finite() && text.bytes().all(|b| b.is_ascii_digit()) => {
            Err("is too large for a class index")
        }
        _ => Err("is not an integer class index"),
    }
}

/// "; did you mean `x`?" for a near miss among `names`, else nothing.
fn did_you_mean(name: &str, names: &[String]) -> String {
    // Same rule as the CLI's suggestions: edit distance with transpositions, within a third of
    // the name's length, ties broken by Jaro-Winkler similarity.
    let limit = (name.chars().count() / 3).max(1);
    names
        .iter()
        .filter(|c| !c.is_empty())
        .map(|c| {
            (
                strsim::osa_distance(name, c),
                -strsim::jaro_winkler(name, c),
                c,
            )
        })
        // Also accept a clearly similar longer name (`latitude` for `lat`).
        .filter(|(distance, similarity, _)| *distance <= limit || -*similarity >= 0.8)
        .min_by(|a, b| a.0.cmp(&b.0).then(a.1.total_cmp(&b.1)))
        .map(|(_, _, c)| format!(" (did you mean `{c}`?)"))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn long_lat() -> Vec<String> {
        names(&["long", "lat"])
    }

    /// Writes `text` to a file in a fresh temporary folder; the folder lives as long as the guard.
    fn file(text: &str) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("split.csv");
        std::fs::write(&path, text).expect("write test csv");
        (dir, path)
    }

    fn read_err(text: &str) -> (String, String) {
        let (_dir, path) = file(text);
        let err = read_csv(&path, &long_lat(), "country").expect_err("should be rejected");
        (format!("{err:#}"), path.display().to_string())
    }

    #[test]
    fn reads_values_and_skips_the_index_column() {
        let (_dir, path) =
            file(",long,lat,country\n502389,20.1446,51.216784,24\n640953,-3.5,45.942072,0\n");
        let t = read_csv(&path, &long_lat(), "country").expect("valid csv");
        assert_eq!(t.features, long_lat());
        assert_eq!(t.label, "country");
        assert_eq!(t.x, vec![20.1446, 51.216784, -3.5, 45.942072]);
        assert_eq!(t.y, vec![24, 0]);
        assert_eq!((t.len(), t.dim(), t.is_empty()), (2, 2, false));
        assert_eq!(t.row(1), &[-3.5, 45.942072]);
        assert_eq!(t.n_classes(), 25);
    }

    #[test]
    fn finds_columns_by_name_in_any_order() {
        let (_dir, path) = file("country,lat,extra,long\n3,10.5,x,-1\n");
        let t = read_csv(&path, &names(&["long", "lat"]), "country").expect("valid csv");
        assert_eq!(t.x, vec![-1.0, 10.5]);
        assert_eq!(t.y, vec![3]);
    }

    #[test]
    fn accepts_an_index_the_header_does_not_name_and_stray_spaces() {
        // R's write.table: data rows have one more field than the header; a BOM, spaces.
        let (_dir, path) = file("\u{feff}long, lat ,country\n1, 2.5 , 7.25 , 1 \n2,3,4,0\n");
        let t = read_csv(&path, &long_lat(), "country").expect("valid csv");
        assert_eq!(t.x, vec![2.5, 7.25, 3.0, 4.0]);
        assert_eq!(t.y, vec![1, 0]);
    }

    #[test]
    fn rejects_ragged_rows_with_line_number() {
        let (msg, path) = read_err(",long,lat,country\n0,1,2,3\n1,1,2\n");
        assert!(msg.contains(&format!("{path}:3:")), "{msg}");
        assert!(msg.contains("3 fields, but 4 expected"), "{msg}");
    }

    #[test]
    fn rejects_non_numeric_features_quoting_the_value() {
        let (msg, path) = read_err(",long,lat,country\n0,1,2,3\n1,1,2,3\n2,1,north,3\n");
        assert!(msg.contains(&format!("{path}:4:")), "{msg}");
        assert!(msg.contains("column `lat`"), "{msg}");
        assert!(msg.contains("\"north\""), "{msg}");
        for bad in ["", "nan", "inf", "1,5"] {
            let (msg, path) = read_err(&format!(",long,lat,country\n0,\"{bad}\",2,3\n"));
            assert!(msg.contains(&format!("{path}:2:")), "{msg}");
            assert!(msg.contains(&format!("{bad:?}")), "{msg}");
        }
    }

    #[test]
    fn rejects_negative_and_non_integer_labels() {
        let (msg, path) = read_err(",long,lat,country\n0,1,2,-1\n");
        assert!(msg.contains(&format!("{path}:2:")), "{msg}");
        assert!(msg.contains("\"-1\" is negative"), "{msg}");

        let (msg, path) = read_err(",long,lat,country\n0,1,2,3\n1,1,2,2.5\n");
        assert!(msg.contains(&format!("{path}:3:")), "{msg}");
        assert!(msg.contains("\"2.5\" is not an integer"), "{msg}");

        let (msg, _) = read_err(",long,lat,country\n0,1,2,Spain\n");
        assert!(msg.contains("\"Spain\" is not an integer"), "{msg}");
        let (msg, _) = read_err(",long,lat,country\n0,1,2,99999999999\n");
        assert!(msg.contains("too large"), "{msg}");
    }

    #[test]
    fn rejects_empty_files() {
        let (msg, path) = read_err("");
        assert!(msg.starts_with(&format!("{path}: empty file")), "{msg}");
        let (msg, path) = read_err(",long,lat,country\n");
        assert!(msg.starts_with(&format!("{path}: no data rows")), "{msg}");
        assert!(msg.contains("line 1"), "{msg}");
    }

    #[test]
    fn rejects_missing_columns_naming_them_and_suggesting() {
        let (_dir, path) = file(",lon,latitude,country\n0,1,2,3\n");
        let err = read_csv(&path, &long_lat(), "label").expect_err("columns missing");
        let msg = format!("{err:#}");
        let shown = path.display();
        assert!(
            msg.starts_with(&format!("{shown}:1: missing columns ")),
            "{msg}"
        );
        assert!(msg.contains("`long` (did you mean `lon`?)"), "{msg}");
        assert!(msg.contains("`lat` (did you mean `latitude`?)"), "{msg}");
        assert!(
            msg.contains("`label`,") || msg.contains("`label`;"),
            "{msg}"
        );
        assert!(
            msg.contains("the header has (unnamed), `lon`, `latitude`, `country`"),
            "{msg}"
        );
    }

    #[test]
    fn rejects_ambiguous_columns() {
        let (msg, path) = read_err(",long,lat,lat,country\n0,1,2,3,4\n");
        assert!(msg.contains(&format!("{path}:1: column `lat` appears more than once")));
    }

    #[test]
    fn missing_file_names_the_path() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("nope.csv");
        let err = read_csv(&path, &long_lat(), "country").expect_err("no file");
        assert!(format!("{err:#}").contains(&path.display().to_string()));
    }

    #[test]
    fn write_then_read_round_trips_exactly() {
        let table = Table {
            features: long_lat(),
            label: "country".to_string(),
            x: vec![20.1446, 51.216784, -10.4, 71.2, 1e-7, -0.0, 1.0 / 3.0, 40.2],
            y: vec![24, 0, 32, 7],
        };
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("out.csv");
        write_csv(&path, &table).expect("write");
        let text = std::fs::read_to_string(&path).expect("read back");
        // `{}` writes the shortest text that reads back as the same f32 (51.216784 → 51.216785).
        assert!(
            text.starts_with(",long,lat,country\n0,20.1446,51.216785,24\n"),
            "{text}"
        );
        let back = read_csv(&path, &long_lat(), "country").expect("read");
        assert_eq!(back, table);
    }

    #[test]
    fn synthetic_splits_round_trip() {
        let cfg = crate::datasets::MapConfig {
            n_train: 3000,
            n_val: 10,
            n_test: 10,
            ..Default::default()
        };
        let (train, _, _) = crate::datasets::synthetic_map(&cfg);
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("train.csv");
        write_csv(&path, &train).expect("write");
        let back = read_csv(&path, &train.features, &train.label).expect("read");
        assert_eq!(back, train);
    }

    #[test]
    fn write_rejects_inconsistent_tables() {
        let table = Table {
            features: long_lat(),
            label: "country".to_string(),
            x: vec![1.0, 2.0, 3.0],
            y: vec![0, 1],
        };
        let dir = tempfile::tempdir().expect("temp dir");
        let err = write_csv(&dir.path().join("bad.csv"), &table).expect_err("3 values for 2×2");
        assert!(
            err.to_string()
                .contains("3 feature values, expected 2 rows × 2 features")
        );
    }

    #[test]
    fn reads_the_real_europe_splits() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/europe");
        if !dir.is_dir() {
            eprintln!("skipped: {} not found", dir.display());
            return;
        }
        for (split, rows) in [("train", 106_897), ("validation", 13_363), ("test", 13_363)] {
            let path = dir.join(format!("{split}.csv"));
            let t = read_csv(&path, &long_lat(), "country").expect("real split reads");
            assert_eq!(t.len(), rows, "{split}");
            assert_eq!(t.dim(), 2);
            assert_eq!(t.n_classes(), 33, "{split}");
            assert!(t.class_counts().iter().all(|&n| n > 0), "{split}");
            for i in 0..t.len() {
                let p = t.row(i);
                assert!((-10.5..=40.3).contains(&p[0]) && (34.7..=71.3).contains(&p[1]));
            }
        }
    }
}
