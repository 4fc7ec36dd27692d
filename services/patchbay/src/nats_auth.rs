//! `patchbay nats-auth`: one NATS user per service, with the permissions of its role
//! ([`patchbay_contract::access`]), as a file the NATS server includes.
//!
//! The directory it writes holds `passwords/<role>` (one random password per role, kept
//! when the command runs again, mode 0600: what each service gets as
//! `PATCHBAY_NATS_PASSWORD`), the same as `env/<role>.env` (docker compose's `env_file`), and
//! `auth.conf` (the server's `authorization` block: users, bcrypt hashes of their passwords,
//! permissions; no secret in it). Run it again after
//! changing `PATCHBAY_PARTITIONS` or the prefix: permissions name the durable consumers of each
//! partition.

use std::path::{Path, PathBuf};

use patchbay_contract::Subjects;
use patchbay_contract::access::{self, Role};
use patchbay_contract::topology::TopologySettings;
use serde_json::{Value, json};

/// The bcrypt cost of the password hashes `patchbay nats-auth` writes. The server checks a
/// hash once per connection.
pub const BCRYPT_COST: u32 = 11;

/// The name of the user for people (`<prefix>-operator`): the whole JetStream API and every
/// inbox, for the `nats` CLI (`nats stream ls`, `nats stream view <p>_DLQ`), nothing else.
pub const OPERATOR: &str = "operator";

/// One role's user (or the operator's): its name, password and permissions.
#[derive(Debug, Clone)]
pub struct User {
    /// The role; `None` for the operator.
    pub role: Option<Role>,
    /// `<prefix>-<role>`.
    pub user: String,
    /// The password in clear (it goes to the service, never to the server's file).
    pub password: String,
}

/// The server's `authorization` block for `users` (passwords bcrypt-hashed with `cost`):
/// NATS configuration syntax (JSON is a subset of it).
pub fn server_config(
    subjects: &Subjects,
    settings: &TopologySettings,
    users: &[User],
    cost: u32,
) -> Result<String, bcrypt::BcryptError> {
    let block = authorization(subjects, settings, users, cost)?;
    Ok(format!(
        "# Written by `patchbay nats-auth` for prefix {:?} and {} partitions; run it again, do \
         not edit.\n{}\n",
        subjects.prefix(),
        settings.partitions,
        serde_json::to_string_pretty(&block).unwrap_or_default()
    ))
}

/// The `{"authorization": {"users": [...]}}` value of [`server_config`], for callers that add
/// users of their own before writing it (test harnesses).
pub fn authorization(
    subjects: &Subjects,
    settings: &TopologySettings,
    users: &[User],
    cost: u32,
) -> Result<Value, bcrypt::BcryptError> {
    let mut entries = Vec::with_capacity(users.len());
    for u in users {
        let p = match u.role {
            Some(role) => access::permissions(subjects, settings, role),
            None => access::Permissions {
                publish: vec!["$JS.API.>".into(), "$JS.ACK.>".into(), "$JS.FC.>".into()],
                subscribe: vec!["_INBOX.>".into()],
                allow_responses: false,
            },
        };
        let mut permissions = json!({
            "publish": {"allow": p.publish},
            "subscribe": {"allow": p.subscribe},
        });
        if p.allow_responses {
            permissions["allow_responses"] = Value::Bool(true);
        }
        entries.push(json!({
            "user": u.user,
            "password": bcrypt::hash(&u.password, cost)?,
            "permissions": permissions,
        }));
    }
    Ok(json!({ "authorization": { "users": entries } }))
}

/// Users of every role with fresh passwords (kept nowhere: for tests and benchmarks).
pub fn fresh_users(
    subjects: &Subjects,
) -> Result<Vec<User>, patchbay_config::secrets::SecretError> {
    Role::every()
        .into_iter()
        .map(|role| {
            Ok(User {
                role: Some(role),
                user: role.user(subjects),
                password: new_password()?,
            })
        })
        .collect()
}

/// A fresh password: 32 random bytes, URL-safe base64.
pub fn new_password() -> Result<String, patchbay_config::secrets::SecretError> {
    patchbay_config::secrets::new_url_token()
}

/// The users of every role, with passwords from `dir/passwords/<role>` (created where
/// missing).
pub fn users(dir: &Path, subjects: &Subjects) -> anyhow::Result<Vec<User>> {
    let passwords = dir.join("passwords");
    std::fs::create_dir_all(&passwords)?;
    let mut users = Vec::new();
    let roles = Role::every().into_iter().map(Some).chain([None]);
    for role in roles {
        let name = role.map_or_else(|| OPERATOR.to_owned(), Role::name);
        let path = passwords.join(&name);
        let password = match std::fs::read_to_string(&path) {
            Ok(p) if !p.trim().is_empty() => p.trim().to_owned(),
            _ => {
                let p = new_password()?;
                write_private(&path, &p)?;
                p
            }
        };
        users.push(User {
            role,
            user: format!("{}-{name}", subjects.prefix()),
            password,
        });
    }
    Ok(users)
}

fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    options.mode(0o600);
    options.open(path)?.write_all(contents.as_bytes())
}

/// Writes `dir/passwords/*` (keeping existing ones) and `dir/auth.conf`; returns the path of
/// `auth.conf`.
pub fn write(
    dir: &Path,
    subjects: &Subjects,
    settings: &TopologySettings,
) -> anyhow::Result<PathBuf> {
    let users = users(dir, subjects)?;
    // The same passwords as `env_file`s, for docker compose (deploy/compose.yaml).
    let env = dir.join("env");
    std::fs::create_dir_all(&env)?;
    for u in &users {
        let name = u.role.map_or_else(|| OPERATOR.to_owned(), Role::name);
        write_private(
            &env.join(format!("{name}.env")),
            &format!("PATCHBAY_NATS_PASSWORD={}\n", u.password),
        )?;
    }
    let conf = server_config(subjects, settings, &users, BCRYPT_COST)
        .map_err(|e| anyhow::anyhow!("hashing a password: {e}"))?;
    let path = dir.join("auth.conf");
    std::fs::write(&path, conf)?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_kept_and_hashed_in_the_server_file() {
        let dir = std::env::temp_dir().join(format!("pb-nats-auth-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let subjects = Subjects::new("pb").unwrap();
        let first = users(&dir, &subjects).unwrap();
        let again = users(&dir, &subjects).unwrap();
        assert_eq!(
            first.len(),
            Role::every().len() + 1,
            "every role and the operator"
        );
        for (a, b) in first.iter().zip(&again) {
            assert_eq!(a.password, b.password, "{} changed", a.user);
        }
        let conf = server_config(&subjects, &TopologySettings::default(), &first, 4).unwrap();
        for u in &first {
            assert!(
                !conf.contains(&u.password),
                "{}'s password in clear",
                u.user
            );
            assert!(conf.contains(&format!("\"{}\"", u.user)));
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
