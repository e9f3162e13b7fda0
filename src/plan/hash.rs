//! Stage keys and file content hashes.
//!
//! A key is blake3 over the canonical JSON of a stage's fingerprint: map keys sorted and numbers
//! canonical (integral floats are integers, see `spec::value`), so key order and `1` vs `1.0`
//! do not change it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Bumped when the fingerprint's layout changes, invalidating every entry.
pub const KEY_VERSION: u32 = 1;

pub fn key_of(fingerprint: &Value) -> String {
    let mut hasher = blake3::Hasher::new();
    write_canonical(fingerprint, &mut hasher);
    hasher.finalize().to_hex().to_string()
}

/// JSON with object keys sorted (maps keep declaration order in memory, for display).
fn write_canonical(value: &Value, out: &mut blake3::Hasher) {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.update(b"{");
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.update(b",");
                }
                out.update(Value::String(k.clone()).to_string().as_bytes());
                out.update(b":");
                write_canonical(&map[k], out);
            }
            out.update(b"}");
        }
        Value::Array(items) => {
            out.update(b"[");
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.update(b",");
                }
                write_canonical(item, out);
            }
            out.update(b"]");
        }
        scalar => {
            out.update(scalar.to_string().as_bytes());
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct FileStamp {
    size: u64,
    mtime_ns: i128,
    inode: u64,
    hash: String,
}

/// Hashes files by content, memoised by (path, size, mtime, inode). A stamp taken less than two
/// seconds after the file's mtime is not memoised: the file could still change within the same
/// mtime tick (git's "racy clean" problem), so such files are rehashed next time.
#[derive(Default)]
pub struct FileHasher {
    memo: HashMap<PathBuf, FileStamp>,
    dirty: bool,
}

const RACY_WINDOW: Duration = Duration::from_secs(2);

impl FileHasher {
    /// Loads the memo; a missing or unreadable memo only costs rehashing.
    pub fn load(memo_path: &Path) -> Self {
        let memo = std::fs::read(memo_path)
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .unwrap_or_default();
        FileHasher { memo, dirty: false }
    }

    pub fn save(&self, memo_path: &Path) -> Result<()> {
        if !self.dirty {
            return Ok(());
        }
        let tmp = memo_path.with_extension(format!("tmp{}", std::process::id()));
        std::fs::write(&tmp, serde_json::to_vec(&self.memo)?)
            .with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, memo_path)
            .with_context(|| format!("writing {}", memo_path.display()))?;
        Ok(())
    }

    pub fn hash(&mut self, path: &Path) -> Result<String> {
        let meta =
            std::fs::metadata(path).with_context(|| format!("cannot read `{}`", path.display()))?;
        if !meta.is_file() {
            anyhow::bail!("`{}` is not a file", path.display());
        }
        let mtime = meta.modified().unwrap_or(UNIX_EPOCH);
        let mtime_ns = match mtime.duration_since(UNIX_EPOCH) {
            Ok(d) => d.as_nanos() as i128,
            Err(e) => -(e.duration().as_nanos() as i128),
        };
        let inode = inode_of(&meta);
        if let Some(stamp) = self.memo.get(path)
            && stamp.size == meta.len()
            && stamp.mtime_ns == mtime_ns
            && stamp.inode == inode
        {
            return Ok(stamp.hash.clone());
        }
        let mut hasher = blake3::Hasher::new();
        hasher
            .update_mmap(path)
            .with_context(|| format!("cannot read `{}`", path.display()))?;
        let hash = hasher.finalize().to_hex().to_string();
        let settled = SystemTime::now()
            .duration_since(mtime)
            .map(|age| age > RACY_WINDOW)
            .unwrap_or(false);
        if settled {
            self.memo.insert(
                path.to_path_buf(),
                FileStamp {
                    size: meta.len(),
                    mtime_ns,
                    inode,
                    hash: hash.clone(),
                },
            );
            self.dirty = true;
        } else {
            self.memo.remove(path);
        }
        Ok(hash)
    }
}

#[cfg(unix)]
fn inode_of(meta: &std::fs::Metadata) -> u64 {
    std::os::unix::fs::MetadataExt::ino(meta)
}

#[cfg(not(unix))]
fn inode_of(_meta: &std::fs::Metadata) -> u64 {
    0
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn key_ignores_map_order() {
        let a: Value = serde_json::from_str(r#"{"op":"x","params":{"a":1,"b":2}}"#).unwrap();
        let b: Value = serde_json::from_str(r#"{"params":{"b":2,"a":1},"op":"x"}"#).unwrap();
        assert_eq!(key_of(&a), key_of(&b));
        assert_ne!(
            key_of(&a),
            key_of(&json!({"op": "x", "params": {"a": 1, "b": 3}}))
        );
    }

    #[test]
    fn changed_file_is_rehashed_even_with_same_stamp() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("f.txt");
        std::fs::write(&f, "one").unwrap();
        let mut h = FileHasher::default();
        let first = h.hash(&f).unwrap();
        std::fs::write(&f, "two").unwrap();
        assert_ne!(first, h.hash(&f).unwrap());
    }

    #[test]
    fn memo_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("f.txt");
        std::fs::write(&f, "data").unwrap();
        let old = SystemTime::now() - Duration::from_secs(60);
        std::fs::File::options()
            .write(true)
            .open(&f)
            .unwrap()
            .set_modified(old)
            .unwrap();
        let memo = dir.path().join("memo.json");
        let mut h = FileHasher::default();
        let hash = h.hash(&f).unwrap();
        h.save(&memo).unwrap();
        let mut again = FileHasher::load(&memo);
        assert!(again.memo.contains_key(&f));
        assert_eq!(again.hash(&f).unwrap(), hash);
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        fn json_value() -> impl Strategy<Value = Value> {
            let leaf = prop_oneof![
                Just(Value::Null),
                any::<bool>().prop_map(Value::Bool),
                any::<i64>().prop_map(|n| json!(n)),
                (-1e6f64..1e6).prop_map(|x| if x.fract() == 0.0 {
                    json!(x as i64)
                } else {
                    json!(x)
                }),
                "\\PC{0,8}".prop_map(Value::String),
                "[\"\\\\:,{}\\[\\]é∂\u{0}-\u{1f}]{0,4}".prop_map(Value::String),
            ];
            leaf.prop_recursive(3, 24, 4, |inner| {
                prop_oneof![
                    prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                    prop::collection::btree_map("\\PC{0,6}", inner, 0..4)
                        .prop_map(|m| Value::Object(m.into_iter().collect())),
                ]
            })
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

            /// Insertion order of map keys never changes a key.
            #[test]
            fn key_order_does_not_matter(pairs in prop::collection::btree_map("\\PC{0,6}", json_value(), 0..6), seed in any::<u64>()) {
                let forward: serde_json::Map<String, Value> = pairs.clone().into_iter().collect();
                let mut shuffled: Vec<(String, Value)> = pairs.into_iter().collect();
                let n = shuffled.len().max(1);
                shuffled.rotate_left((seed as usize) % n);
                if seed % 2 == 0 {
                    shuffled.reverse();
                }
                let backward: serde_json::Map<String, Value> = shuffled.into_iter().collect();
                prop_assert_eq!(key_of(&Value::Object(forward)), key_of(&Value::Object(backward)));
            }

            /// Different values get different keys (strings with quotes, escapes and unicode
            /// cannot be confused with structure).
            #[test]
            fn different_values_have_different_keys(a in json_value(), b in json_value()) {
                if a != b {
                    prop_assert_ne!(key_of(&a), key_of(&b));
                } else {
                    prop_assert_eq!(key_of(&a), key_of(&b));
                }
            }

            /// `n` and `n.0` written in YAML are one value, hence one key.
            #[test]
            fn integral_floats_are_integers(n in -1_000_000_000i64..1_000_000_000) {
                let int: yaml_serde::Value = yaml_serde::from_str(&format!("{{a: {n}}}")).unwrap();
                let float: yaml_serde::Value = yaml_serde::from_str(&format!("{{a: {n}.0}}")).unwrap();
                let (int, float) = (crate::spec::yaml_to_json(&int).unwrap(), crate::spec::yaml_to_json(&float).unwrap());
                prop_assert_eq!(key_of(&int), key_of(&float));
            }
        }
    }
}
