//! `patchbay master-key reseal`: every stored sealed value sealed again with the current master
//! key, so a previous key can be dropped (`docs/security.md`, "Master key rotation").
//!
//! Where sealed values are kept, and how each is rewritten without losing a concurrent write:
//!
//! - PostgreSQL, schema `auth` (the truth): webhook secrets, API keys (for BrandChat's
//!   signatures), channel credentials; one compare-and-set statement per value
//!   ([`patchbay_auth::reseal`]).
//! - The config bucket: the copies `auth` publishes in bot and channel records
//!   (`webhook_secrets[].sealed`, `brandchat_keys[].sealed`, `credentials.sealed`).
//! - The tokens bucket (WeChat access tokens) and the replies bucket (LINE reply tokens):
//!   whole entries, sealed for the entry's key.
//!
//! Bucket entries are rewritten at the revision read (a compare-and-set): when a service wrote
//! the entry meanwhile, it is read again. Values already sealed with the current key are left
//! alone, so a pass can be interrupted and run again. Sealed NATS requests and replies
//! (`Pb-Sealed`) are never stored.

use std::time::Duration;

use async_nats::jetstream::kv::{self, Store};
use futures::TryStreamExt;
use patchbay_config::secrets::ResealCounts;
use patchbay_config::{Config, MasterKey};
use patchbay_contract::access::SEALED_BUCKETS;
use patchbay_contract::brandchat::key_owner;
use patchbay_contract::subjects::Bucket;
use patchbay_runtime::BoxError;
use serde_json::Value;

/// The process name the pass connects as: `patchbay migrate`'s NATS user, the operator's
/// maintenance role.
const PROCESS: &str = "patchbay-migrate";

/// How often one entry is read again when services keep changing it under the pass.
const ATTEMPTS: usize = 20;

/// What a pass found, per place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// Only counted, nothing written.
    pub check: bool,
    /// Each place (`auth.channels.credentials_sealed`, `kv <bucket>`) and its counts.
    pub places: Vec<(String, ResealCounts)>,
}

impl Report {
    /// The counts of every place together.
    pub fn total(&self) -> ResealCounts {
        let mut t = ResealCounts::default();
        for (_, c) in &self.places {
            t.add(c.clone());
        }
        t
    }

    /// Whether every value is sealed with the current key (a check), or was sealed again
    /// (a pass): nothing failed and, for a check, nothing is left to re-seal.
    pub fn done(&self) -> bool {
        let t = self.total();
        t.failed.is_empty() && !(self.check && t.resealed > 0)
    }

    /// A table per place, the failures, and a summary line.
    pub fn render(&self) -> String {
        let moved = if self.check { "TO RESEAL" } else { "RESEALED" };
        let width = self
            .places
            .iter()
            .map(|(p, _)| p.len())
            .chain([5])
            .max()
            .unwrap_or(5);
        let mut out = format!(
            "{:<width$}  {:>9}  {moved:>9}  {:>6}\n",
            "PLACE", "CURRENT", "FAILED"
        );
        for (place, c) in &self.places {
            out.push_str(&format!(
                "{place:<width$}  {:>9}  {:>9}  {:>6}\n",
                c.current,
                c.resealed,
                c.failed.len()
            ));
        }
        let t = self.total();
        for f in &t.failed {
            out.push_str(&format!("failed: {f}\n"));
        }
        out.push_str(&if self.check {
            format!(
                "{} sealed with the current key, {} with other keys, {} cannot be opened\n",
                t.current,
                t.resealed,
                t.failed.len()
            )
        } else {
            format!(
                "{} resealed, {} already current, {} failed\n",
                t.resealed,
                t.current,
                t.failed.len()
            )
        });
        out
    }
}

/// Re-seals every stored sealed value with the configured current master key (opening with it
/// and `PATCHBAY_MASTER_KEY_ACCEPTED`), or with `check` only counts. Connects to NATS as
/// `patchbay migrate` does and to PostgreSQL's schema `auth`.
pub async fn reseal(config: &Config, check: bool) -> Result<Report, BoxError> {
    let key = config.require_master_key()?;
    let subjects = patchbay_contract::Subjects::new(&config.nats_prefix)?;
    let bus = patchbay_bus::Bus::connect(
        &config.nats_url,
        PROCESS,
        subjects,
        config.publish_timeout(),
        &patchbay_runtime::lifecycle::nats_access(config, PROCESS)?,
    )
    .await?;
    let mut places = Vec::new();
    // The database first: `auth` republishes from it, so what it publishes after this is
    // current too.
    let pool = patchbay_store::connect(
        config.require_database_url()?,
        "auth",
        1,
        patchbay_auth::MIGRATIONS,
        Duration::from_secs(120),
    )
    .await?;
    let tables = patchbay_auth::reseal(&pool, &key, check).await;
    pool.close().await;
    places.extend(tables?.into_iter().map(|(p, c)| (p.to_owned(), c)));
    for bucket in SEALED_BUCKETS {
        // Config records have sealed fields; the others are sealed whole.
        let records = bucket == Bucket::Config;
        let name = bus.subjects().bucket(bucket);
        let kv = bus
            .jetstream()
            .get_key_value(&name)
            .await
            .map_err(|e| format!("cannot open the {name} bucket: {e}"))?;
        let counts = reseal_bucket(&kv, &name, &key, check, records).await?;
        places.push((format!("kv {name}"), counts));
    }
    Ok(Report { check, places })
}

/// Every entry of `kv` (named `bucket`) re-sealed: the sealed fields of config records when
/// `records`, else whole entries.
async fn reseal_bucket(
    kv: &Store,
    bucket: &str,
    key: &MasterKey,
    check: bool,
    records: bool,
) -> Result<ResealCounts, BoxError> {
    let names: Vec<String> = kv
        .keys()
        .await
        .map_err(|e| format!("cannot list the {bucket} bucket: {e}"))?
        .try_collect()
        .await
        .map_err(|e| format!("cannot list the {bucket} bucket: {e}"))?;
    let mut counts = ResealCounts::default();
    for name in names {
        let place = format!("{bucket} {name}");
        for attempt in 0.. {
            if attempt == ATTEMPTS {
                counts
                    .failed
                    .push(format!("{place}: kept changing; run the pass again"));
                break;
            }
            let entry = kv
                .entry(&name)
                .await
                .map_err(|e| format!("cannot read {place}: {e}"))?;
            // Deleted or expired since it was listed.
            let Some(entry) = entry.filter(|e| e.operation == kv::Operation::Put) else {
                break;
            };
            let (new, one) = if records {
                reseal_record(key, &place, &name, &entry.value)
            } else {
                reseal_whole(key, &place, &name, &entry.value)
            };
            let Some(new) = new.filter(|_| !check) else {
                counts.add(one);
                break;
            };
            match kv.update(&name, new.into(), entry.revision).await {
                Ok(_) => {
                    counts.add(one);
                    break;
                }
                // A service wrote it meanwhile: read it again.
                Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => {}
                Err(e) => return Err(format!("cannot write {place}: {e}").into()),
            }
        }
    }
    Ok(counts)
}

/// A config bucket record (`bot.<id>`, `channel.<id>`) with its sealed fields re-sealed;
/// other keys (`apikey.<hash>`) hold nothing sealed. Unknown fields are kept as they are.
fn reseal_record(
    key: &MasterKey,
    place: &str,
    name: &str,
    value: &[u8],
) -> (Option<Vec<u8>>, ResealCounts) {
    let mut counts = ResealCounts::default();
    let owned: Vec<(&str, String)> = if let Some(id) = name.strip_prefix("bot.") {
        vec![
            ("/webhook_secrets", id.to_owned()),
            ("/brandchat_keys", key_owner(id)),
        ]
    } else if let Some(id) = name.strip_prefix("channel.") {
        vec![("/credentials", id.to_owned())]
    } else {
        return (None, counts);
    };
    let mut record: Value = match serde_json::from_slice(value) {
        Ok(v) => v,
        Err(e) => {
            counts.failed.push(format!("{place}: not a record: {e}"));
            return (None, counts);
        }
    };
    let mut changed = false;
    for (pointer, owner) in owned {
        let secrets: Vec<&mut Value> = match record.pointer_mut(pointer) {
            Some(Value::Array(list)) => list.iter_mut().collect(),
            Some(one @ Value::Object(_)) => vec![one],
            _ => Vec::new(),
        };
        for secret in secrets {
            let Some(slot) = secret.get_mut("sealed") else {
                continue;
            };
            if let Some(new) = slot
                .as_str()
                .and_then(|s| counts.reseal(key, place, &owner, s))
            {
                *slot = Value::String(new);
                changed = true;
            }
        }
    }
    let bytes = changed.then(|| serde_json::to_vec(&record).unwrap_or_default());
    (bytes.filter(|b| !b.is_empty()), counts)
}

/// A whole sealed entry (the entry's key is the associated data). An entry in clear (JSON,
/// written by a process without a master key) is not counted.
fn reseal_whole(
    key: &MasterKey,
    place: &str,
    name: &str,
    value: &[u8],
) -> (Option<Vec<u8>>, ResealCounts) {
    let mut counts = ResealCounts::default();
    let text = String::from_utf8_lossy(value);
    if text.trim_start().starts_with('{') {
        return (None, counts);
    }
    let new = counts
        .reseal(key, place, name, &text)
        .map(String::into_bytes);
    (new, counts)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> String {
        MasterKey::generate_base64().unwrap()
    }

    #[test]
    fn records_keep_their_fields_and_get_their_secrets_resealed() {
        let (a, b) = (key(), key());
        let old = MasterKey::from_base64(&a).unwrap();
        let ring = MasterKey::keyring(&b, &[&a]).unwrap();
        let bot = serde_json::json!({
            "id": "bot_1",
            "future_field": {"kept": true},
            "webhook_secrets": [
                {"sealed": old.seal("bot_1", b"whsec_1").unwrap()},
                {"sealed": ring.seal("bot_1", b"whsec_2").unwrap(), "expires_at": "2030-01-01T00:00:00Z"}
            ],
            "brandchat_keys": [{"sealed": old.seal(&key_owner("bot_1"), b"pbk_1").unwrap()}]
        });
        let (new, counts) =
            reseal_record(&ring, "p", "bot.bot_1", &serde_json::to_vec(&bot).unwrap());
        assert_eq!((counts.current, counts.resealed), (1, 2), "{counts:?}");
        let new: Value = serde_json::from_slice(&new.expect("rewritten")).unwrap();
        assert_eq!(new["future_field"], bot["future_field"]);
        assert_eq!(new["webhook_secrets"][1], bot["webhook_secrets"][1]);
        let only_b = MasterKey::from_base64(&b).unwrap();
        let open = |owner: &str, v: &Value| only_b.open(owner, v.as_str().unwrap()).unwrap();
        assert_eq!(
            open("bot_1", &new["webhook_secrets"][0]["sealed"]),
            b"whsec_1"
        );
        assert_eq!(
            open(&key_owner("bot_1"), &new["brandchat_keys"][0]["sealed"]),
            b"pbk_1"
        );

        let channel =
            serde_json::json!({"credentials": {"sealed": old.seal("ch_1", b"{}").unwrap()}});
        let bytes = serde_json::to_vec(&channel).unwrap();
        let (new, counts) = reseal_record(&ring, "p", "channel.ch_1", &bytes);
        assert_eq!(counts.resealed, 1);
        let new: Value = serde_json::from_slice(&new.unwrap()).unwrap();
        assert_eq!(open("ch_1", &new["credentials"]["sealed"]), b"{}");
        // Sealed for another channel: reported, not rewritten.
        let (new, counts) = reseal_record(&ring, "p", "channel.ch_2", &bytes);
        assert_eq!((new, counts.failed.len()), (None, 1));
        // API key records carry nothing sealed.
        let (new, counts) = reseal_record(&ring, "p", "apikey.ab", b"{\"key_id\":\"key_1\"}");
        assert_eq!((new, counts), (None, ResealCounts::default()));
    }

    #[test]
    fn whole_entries_are_resealed_and_clear_ones_left_alone() {
        let (a, b) = (key(), key());
        let ring = MasterKey::keyring(&b, &[&a]).unwrap();
        let sealed = MasterKey::from_base64(&a)
            .unwrap()
            .seal("wechat.wx1", b"{}")
            .unwrap();
        let (new, counts) = reseal_whole(&ring, "p", "wechat.wx1", sealed.as_bytes());
        assert_eq!(counts.resealed, 1);
        assert!(ring.is_current(std::str::from_utf8(&new.unwrap()).unwrap()));
        let (new, counts) = reseal_whole(&ring, "p", "wechat.wx1", b"{\"token\":\"t\"}");
        assert_eq!((new, counts), (None, ResealCounts::default()));
    }
}
