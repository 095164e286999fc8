//! `console:`: who may sign in to the on-call console (`/ui/`) and for how long a sign-in
//! lasts.

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};
use std::time::Duration;

use serde::Deserialize;

use super::{ConfigError, Problems, invalid};
use crate::time::parse_duration;

/// A sign-in lasts this long unless `session_lifetime` says otherwise: one night on call.
const DEFAULT_SESSION_LIFETIME: Duration = Duration::from_secs(12 * 3600);
/// Longest session allowed: a stolen cookie must run out.
const MAX_SESSION_LIFETIME: Duration = Duration::from_secs(30 * 24 * 3600);

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConsole {
    #[serde(default)]
    pub users: BTreeMap<String, RawUser>,
    pub session_lifetime: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawUser {
    pub password_hash: String,
    pub role: String,
}

impl fmt::Debug for RawUser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RawUser")
            .field("role", &self.role)
            .finish_non_exhaustive()
    }
}

/// What a signed-in user may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Sees everything the console shows.
    Viewer,
    /// Also acknowledges, escalates, resolves, retries dead letters and edits maintenance.
    Responder,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Responder => "responder",
        }
    }
}

/// A console user. The hash stays out of `Debug`: it can be attacked offline.
#[derive(Clone)]
pub struct ConsoleUser {
    pub name: String,
    /// bcrypt, the format of the web configuration's `basic_auth_users`.
    pub password_hash: String,
    pub role: Role,
}

impl fmt::Debug for ConsoleUser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConsoleUser")
            .field("name", &self.name)
            .field("role", &self.role)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone)]
pub struct ConsoleConfig {
    pub users: BTreeMap<String, ConsoleUser>,
    pub session_lifetime: Duration,
}

impl Default for ConsoleConfig {
    fn default() -> Self {
        ConsoleConfig {
            users: BTreeMap::new(),
            session_lifetime: DEFAULT_SESSION_LIFETIME,
        }
    }
}

/// Validates `console:`, every user's error reported.
pub(super) fn console(raw: Option<RawConsole>, problems: &mut Problems) -> ConsoleConfig {
    let Some(raw) = raw else {
        return ConsoleConfig::default();
    };
    let session_lifetime = problems.or(
        lifetime(raw.session_lifetime.as_deref()),
        DEFAULT_SESSION_LIFETIME,
    );
    let mut users = BTreeMap::new();
    for (name, user) in raw.users {
        if let Some(user) = problems.keep(console_user(name, user)) {
            users.insert(user.name.clone(), user);
        }
    }
    ConsoleConfig {
        users,
        session_lifetime,
    }
}

fn lifetime(raw: Option<&str>) -> Result<Duration, ConfigError> {
    let Some(raw) = raw else {
        return Ok(DEFAULT_SESSION_LIFETIME);
    };
    let key = "console.session_lifetime";
    let d = parse_duration(raw).map_err(|e| invalid(key, e.to_string()))?;
    if d < Duration::from_secs(60) || d > MAX_SESSION_LIFETIME {
        return Err(invalid(key, "use a duration from 1m to 30d"));
    }
    Ok(d)
}

fn console_user(name: String, raw: RawUser) -> Result<ConsoleUser, ConfigError> {
    let key = format!("console.users.{name}");
    if name.is_empty()
        || name.len() > 64
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.@".contains(c))
    {
        return Err(invalid(
            key,
            "a user name has 1 to 64 letters, digits, '-', '_', '.' or '@'",
        ));
    }
    let parts = raw
        .password_hash
        .parse::<bcrypt::HashParts>()
        .map_err(|e| {
            invalid(
                format!("{key}.password_hash"),
                format!(
                    "not a bcrypt hash ({e}); make one with `htpasswd -nBC 10 \"\" | tr -d ':'`"
                ),
            )
        })?;
    if !(4..=31).contains(&parts.get_cost()) {
        return Err(invalid(
            format!("{key}.password_hash"),
            format!("bcrypt cost {} is outside 4..=31", parts.get_cost()),
        ));
    }
    let role = match raw.role.as_str() {
        "viewer" => Role::Viewer,
        "responder" => Role::Responder,
        _ => {
            return Err(invalid(
                format!("{key}.role"),
                "use viewer (sees everything) or responder (also acts)",
            ));
        }
    };
    Ok(ConsoleUser {
        name,
        password_hash: raw.password_hash,
        role,
    })
}

/// `check-config`'s console line: who may sign in, never a hash.
pub(super) fn describe(console: &ConsoleConfig, out: &mut String) {
    if console.users.is_empty() {
        let _ = writeln!(
            out,
            "console: /ui/ has no users (add console.users to sign in)"
        );
        return;
    }
    let users: Vec<String> = (console.users.values())
        .map(|u| format!("{} ({})", u.name, u.role.as_str()))
        .collect();
    let _ = writeln!(
        out,
        "console: /ui/ for {}; sessions last {}",
        users.join(", "),
        crate::time::humanize(console.session_lifetime)
    );
}
