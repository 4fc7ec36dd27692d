//! Property-based fuzzing (proptest) of what the internet and the cluster can send Patchbay's
//! parsers: the case count every `fuzz_` test runs, arbitrary inputs, and *near-valid* ones
//! (a real payload with a few fields replaced, removed or retyped, a few bits flipped), which
//! get past the first JSON or XML error into the code behind it. `docs/security.md` lists the
//! tests.
//!
//! `make test` runs each `fuzz_` test with [`DEFAULT_CASES`] cases; `make fuzz` sets
//! `PROPTEST_CASES` much higher. A failure prints the smallest input proptest found; keep it as
//! a named regression test beside the fix (no regression files are written).

use proptest::prelude::*;
use proptest::test_runner::Config;
use serde_json::{Map, Value};

pub use proptest;

/// Cases per `fuzz_` test when `PROPTEST_CASES` is not set: enough to catch a shallow panic,
/// few enough that all of them add a few seconds to `make test`.
pub const DEFAULT_CASES: u32 = 64;

/// The proptest configuration of the `fuzz_` tests: `PROPTEST_CASES` cases (else
/// [`DEFAULT_CASES`]), no regression files in the source tree.
pub fn config() -> Config {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_CASES);
    Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    }
}

/// Strings parsers trip on: empty, blank, huge and odd numbers, the non-finite floats Rust's
/// `parse` accepts, markup and escapes, control characters, long runs, non-ASCII.
pub fn tricky_string() -> BoxedStrategy<String> {
    prop_oneof![
        Just(String::new()),
        Just(" ".to_owned()),
        Just("0".to_owned()),
        Just("-1".to_owned()),
        Just("9223372036854775808".to_owned()),
        Just("-9223372036854775809".to_owned()),
        Just("1e999".to_owned()),
        Just("NaN".to_owned()),
        Just("inf".to_owned()),
        Just("-infinity".to_owned()),
        Just("1.5".to_owned()),
        Just("null".to_owned()),
        Just("true".to_owned()),
        Just("]]><x/>".to_owned()),
        Just("<![CDATA[".to_owned()),
        Just("&amp;&#0;&bogus;".to_owned()),
        Just("\u{0}\u{1}\u{7f}".to_owned()),
        Just("\u{feff}\u{202e}é漢字🙂".to_owned()),
        Just("/start".to_owned()),
        Just("/start@bot x".to_owned()),
        Just("https://".to_owned()),
        Just("x".repeat(5000)),
        "[a-z0-9_:.-]{0,24}",
        any::<String>(),
    ]
    .boxed()
}

/// Arbitrary JSON: scalars of every kind, [`tricky_string`]s, and arrays and objects nested a
/// few levels, with keys from `keys` (a platform's field names, so objects look like its own)
/// or made up.
pub fn json(keys: &'static [&'static str]) -> BoxedStrategy<Value> {
    let key = key(keys);
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        // The edges, which uniform draws practically never hit.
        prop::sample::select(&[i64::MIN, i64::MIN + 1, -1, 0, 1, i64::MAX][..])
            .prop_map(Value::from),
        Just(Value::from(u64::MAX)),
        prop_oneof![
            Just(0.0),
            Just(-0.0),
            Just(1e308),
            Just(-1e-308),
            any::<f64>()
        ]
        .prop_map(Value::from),
        tricky_string().prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec((key.clone(), inner), 0..4)
                .prop_map(|entries| Value::Object(entries.into_iter().collect::<Map<_, _>>())),
        ]
    })
    .boxed()
}

fn key(keys: &'static [&'static str]) -> BoxedStrategy<String> {
    if keys.is_empty() {
        return "[a-z_]{1,8}".boxed();
    }
    prop_oneof![
        3 => prop::sample::select(keys).prop_map(str::to_owned),
        1 => "[a-zA-Z_]{1,8}",
    ]
    .boxed()
}

/// One change to a JSON document, at the node `at` picks (an index into its nodes, modulo).
#[derive(Debug, Clone)]
pub enum Mutation {
    /// Replace the node with another value (of any type).
    Replace {
        /// Which node.
        at: usize,
        /// What it becomes.
        with: Value,
    },
    /// Remove the node from its object or array.
    Remove {
        /// Which node.
        at: usize,
    },
    /// Add a field to the object (or an element to the array) at the node.
    Insert {
        /// Which node.
        at: usize,
        /// The field's name (ignored for arrays).
        key: String,
        /// Its value.
        value: Value,
    },
    /// Put the node in an array, or an array's first element in its place.
    Wrap {
        /// Which node.
        at: usize,
    },
}

/// Up to `max` mutations of documents like those of `keys`.
pub fn mutations(keys: &'static [&'static str], max: usize) -> BoxedStrategy<Vec<Mutation>> {
    let mutation = prop_oneof![
        3 => (any::<usize>(), json(keys)).prop_map(|(at, with)| Mutation::Replace { at, with }),
        2 => any::<usize>().prop_map(|at| Mutation::Remove { at }),
        2 => (any::<usize>(), key(keys), json(keys))
            .prop_map(|(at, key, value)| Mutation::Insert { at, key, value }),
        1 => any::<usize>().prop_map(|at| Mutation::Wrap { at }),
    ];
    prop::collection::vec(mutation, 1..=max.max(1)).boxed()
}

/// `seed` with `mutations` applied in order.
pub fn mutate(mut seed: Value, mutations: &[Mutation]) -> Value {
    for m in mutations {
        let paths = pointers(&seed);
        let pick = |at: usize| paths[at % paths.len()].clone();
        match m {
            Mutation::Replace { at, with } => {
                if let Some(node) = seed.pointer_mut(&pick(*at)) {
                    *node = with.clone();
                }
            }
            Mutation::Remove { at } => {
                let path = pick(*at);
                if let Some((parent, last)) = path.rsplit_once('/')
                    && let Some(node) = seed.pointer_mut(parent)
                {
                    let last = last.replace("~1", "/").replace("~0", "~");
                    match node {
                        Value::Object(map) => {
                            map.remove(&last);
                        }
                        Value::Array(items) => {
                            if let Ok(i) = last.parse::<usize>()
                                && i < items.len()
                            {
                                items.remove(i);
                            }
                        }
                        _ => {}
                    }
                }
            }
            Mutation::Insert { at, key, value } => match seed.pointer_mut(&pick(*at)) {
                Some(Value::Object(map)) => {
                    map.insert(key.clone(), value.clone());
                }
                Some(Value::Array(items)) => items.push(value.clone()),
                _ => {}
            },
            Mutation::Wrap { at } => {
                if let Some(node) = seed.pointer_mut(&pick(*at)) {
                    *node = match node.take() {
                        Value::Array(mut items) if !items.is_empty() => items.swap_remove(0),
                        other => Value::Array(vec![other]),
                    };
                }
            }
        }
    }
    seed
}

/// JSON pointers of every node of `v`, the root (`""`) first.
fn pointers(v: &Value) -> Vec<String> {
    fn walk(v: &Value, here: String, out: &mut Vec<String>) {
        match v {
            Value::Object(map) => {
                for (k, child) in map {
                    walk(
                        child,
                        format!("{here}/{}", k.replace('~', "~0").replace('/', "~1")),
                        out,
                    );
                }
            }
            Value::Array(items) => {
                for (i, child) in items.iter().enumerate() {
                    walk(child, format!("{here}/{i}"), out);
                }
            }
            _ => {}
        }
        out.push(here);
    }
    let mut out = Vec::new();
    walk(v, String::new(), &mut out);
    out.rotate_right(1);
    out
}

/// One of `seeds` (real payloads, as JSON) with up to three [`Mutation`]s.
pub fn near_valid_json(seeds: Vec<Value>, keys: &'static [&'static str]) -> BoxedStrategy<Value> {
    (prop::sample::select(seeds), mutations(keys, 3))
        .prop_map(|(seed, m)| mutate(seed, &m))
        .boxed()
}

/// One change to a byte string, at a position `at` picks (modulo its length).
#[derive(Debug, Clone)]
pub enum ByteEdit {
    /// Flip one bit.
    Flip {
        /// Which byte.
        at: usize,
        /// Which bit of it.
        bit: u8,
    },
    /// Cut the bytes from here on.
    Truncate {
        /// Where.
        at: usize,
    },
    /// Insert bytes here.
    Insert {
        /// Where.
        at: usize,
        /// What.
        bytes: Vec<u8>,
    },
}

/// `seed` with `edits` applied in order.
pub fn edit_bytes(mut seed: Vec<u8>, edits: &[ByteEdit]) -> Vec<u8> {
    for e in edits {
        let len = seed.len();
        match e {
            ByteEdit::Flip { at, bit } if len > 0 => seed[at % len] ^= 1 << (bit % 8),
            ByteEdit::Flip { .. } => {}
            ByteEdit::Truncate { at } => seed.truncate(at % (len + 1)),
            ByteEdit::Insert { at, bytes } => {
                let at = at % (len + 1);
                seed.splice(at..at, bytes.iter().copied());
            }
        }
    }
    seed
}

/// One of `seeds` with up to four [`ByteEdit`]s: what a broken client, a proxy or an attacker
/// makes of a real payload.
pub fn near_valid_bytes(seeds: Vec<Vec<u8>>) -> BoxedStrategy<Vec<u8>> {
    let edit = prop_oneof![
        3 => (any::<usize>(), any::<u8>()).prop_map(|(at, bit)| ByteEdit::Flip { at, bit }),
        1 => any::<usize>().prop_map(|at| ByteEdit::Truncate { at }),
        2 => (any::<usize>(), prop::collection::vec(any::<u8>(), 1..8))
            .prop_map(|(at, bytes)| ByteEdit::Insert { at, bytes }),
    ];
    (
        prop::sample::select(seeds),
        prop::collection::vec(edit, 1..=4),
    )
        .prop_map(|(seed, edits)| edit_bytes(seed, &edits))
        .boxed()
}

/// Arbitrary bytes, up to `max` long, often valid UTF-8 or JSON-looking.
pub fn bytes(max: usize) -> BoxedStrategy<Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..max),
        any::<String>().prop_map(String::into_bytes),
        json(&[]).prop_map(|v| v.to_string().into_bytes()),
    ]
    .boxed()
}

/// `bytes` with bit `bit` (modulo their length in bits) flipped.
pub fn flip(bytes: &[u8], bit: usize) -> Vec<u8> {
    let mut out = bytes.to_vec();
    if !out.is_empty() {
        let bit = bit % (out.len() * 8);
        out[bit / 8] ^= 1 << (bit % 8);
    }
    out
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The bytes of hex text (either case); `None` if it is not hex.
pub fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Fails unless `message` says something: a rejection must explain itself.
pub fn clear(message: &str) -> Result<(), TestCaseError> {
    prop_assert!(
        !message.trim().is_empty(),
        "a rejection with an empty message"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn mutations_reach_every_node_and_keep_the_rest() {
        let seed = json!({"a": {"b": [1, 2]}, "c/d": "x"});
        assert_eq!(
            pointers(&seed),
            ["", "/a/b/0", "/a/b/1", "/a/b", "/a", "/c~1d"]
        );
        let removed = mutate(seed.clone(), &[Mutation::Remove { at: 1 }]);
        assert_eq!(removed, json!({"a": {"b": [2]}, "c/d": "x"}));
        let removed = mutate(seed.clone(), &[Mutation::Remove { at: 5 }]);
        assert_eq!(removed, json!({"a": {"b": [1, 2]}}));
        let wrapped = mutate(seed.clone(), &[Mutation::Wrap { at: 5 }]);
        assert_eq!(wrapped, json!({"a": {"b": [1, 2]}, "c/d": ["x"]}));
        let replaced = mutate(
            seed,
            &[Mutation::Replace {
                at: 0,
                with: json!(7),
            }],
        );
        assert_eq!(replaced, json!(7));
    }

    #[test]
    fn byte_edits_stay_in_bounds() {
        let edited = edit_bytes(
            b"abc".to_vec(),
            &[
                ByteEdit::Flip { at: 4, bit: 9 },
                ByteEdit::Insert {
                    at: 7,
                    bytes: vec![b'!'],
                },
                ByteEdit::Truncate { at: 8 },
            ],
        );
        // b ^ 2 = `, then "!" at 7 % 4 = 3, then cut at 8 % 5 = 3.
        assert_eq!(edited, b"a`c".to_vec());
    }
}
