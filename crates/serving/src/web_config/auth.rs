//! `basic_auth_users`: HTTP basic auth against bcrypt hashes, as exporter-toolkit does it.
//!
//! bcrypt is slow on purpose (cost 12 takes seconds on a Pi Zero), so: verifications run on
//! the blocking pool, one at a time, and successes are remembered so that Prometheus, which
//! sends the same credentials every scrape, pays for bcrypt once.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use http::header::AUTHORIZATION;
use http::{HeaderMap, HeaderValue};
use sha2::{Digest, Sha256};
use subtle::{Choice, ConditionallySelectable, ConstantTimeEq};

use super::{Rejection, WebConfigError, lock};

/// Remembered successful verifications; past this the cache is emptied (cheaper than LRU
/// bookkeeping, and a legitimate client re-verifies once).
const CACHE_CAPACITY: usize = 256;

/// A configured user.
pub(super) struct User {
    name: String,
    hash: String,
    cost: u32,
}

impl fmt::Debug for User {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The hash stays out of logs: it can be attacked offline.
        f.debug_struct("User")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// Validates `basic_auth_users` (user name → bcrypt hash).
pub(super) fn users(map: BTreeMap<String, String>) -> Result<Vec<User>, WebConfigError> {
    map.into_iter()
        .map(|(name, hash)| {
            let cost = hash_cost(&hash).map_err(|message| {
                WebConfigError::invalid(format!("basic_auth_users.{name}"), message)
            })?;
            Ok(User { name, hash, cost })
        })
        .collect()
}

fn hash_cost(hash: &str) -> Result<u32, String> {
    let parts = hash
        .parse::<bcrypt::HashParts>()
        .map_err(|error| format!("not a bcrypt hash ({error})"))?;
    let cost = parts.get_cost();
    // The range bcrypt accepts; outside it every verification would fail.
    if !(4..=31).contains(&cost) {
        return Err(format!("bcrypt cost {cost} is outside 4..=31"));
    }
    Ok(cost)
}

/// Basic auth for one loaded config.
pub(super) struct BasicAuth {
    users: Vec<User>,
    /// Index of the user whose hash requests for unknown users are checked against: the most
    /// expensive one, so that an unknown name is never answered faster than a real one.
    decoy: usize,
    /// SHA-256 of (user, hash, password) of successful verifications; never the password.
    verified: Mutex<HashSet<[u8; 32]>>,
    /// Serialises bcrypt runs so that a flood of wrong passwords occupies one core, not all.
    bcrypt_lock: Arc<tokio::sync::Mutex<()>>,
}

impl fmt::Debug for BasicAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BasicAuth")
            .field("users", &self.users)
            .finish_non_exhaustive()
    }
}

impl BasicAuth {
    /// `None` without users: no authentication, as in exporter-toolkit.
    pub(super) fn new(users: Vec<User>, bcrypt_lock: Arc<tokio::sync::Mutex<()>>) -> Option<Self> {
        let decoy = users
            .iter()
            .enumerate()
            .max_by_key(|(_, user)| user.cost)
            .map(|(index, _)| index)?;
        Some(Self {
            users,
            decoy,
            verified: Mutex::new(HashSet::new()),
            bcrypt_lock,
        })
    }

    /// Checks the request's `Authorization` header.
    pub(super) async fn check(&self, headers: &HeaderMap) -> Result<(), Rejection> {
        let credentials = headers
            .get(AUTHORIZATION)
            .and_then(Credentials::parse)
            .ok_or(Rejection::Unauthorized)?;
        let user = self.find(&credentials.user);
        let hash = &self.users[user.unwrap_or(self.decoy)].hash;
        let key = cache_key(&credentials.user, hash, &credentials.password);
        if user.is_some() && lock(&self.verified).contains(&key) {
            return Ok(());
        }
        // Unknown users are verified too (against the decoy hash) and always rejected, so that
        // response times do not tell which user names exist.
        let matches = self.bcrypt_verify(credentials.password, hash.clone()).await;
        if !(matches && user.is_some()) {
            return Err(Rejection::Unauthorized);
        }
        let mut verified = lock(&self.verified);
        if verified.len() >= CACHE_CAPACITY {
            verified.clear();
        }
        verified.insert(key);
        Ok(())
    }

    /// The index of the user called `name`, comparing against every user in constant time so
    /// that timing tells neither whether nor which user matched.
    fn find(&self, name: &[u8]) -> Option<usize> {
        let mut found = Choice::from(0);
        let mut index = 0u64;
        for (i, user) in (0u64..).zip(&self.users) {
            let hit = user.name.as_bytes().ct_eq(name);
            index.conditional_assign(&i, hit);
            found |= hit;
        }
        if bool::from(found) {
            usize::try_from(index).ok()
        } else {
            None
        }
    }

    async fn bcrypt_verify(&self, password: Vec<u8>, hash: String) -> bool {
        // The guard moves into the blocking task: should this request be dropped mid-way, the
        // lock stays held until bcrypt has actually finished.
        let guard = Arc::clone(&self.bcrypt_lock).lock_owned().await;
        tokio::task::spawn_blocking(move || {
            let _guard = guard;
            // Err: a malformed hash or a password longer than bcrypt's 72 bytes. Either way,
            // not a match.
            bcrypt::non_truncating_verify(password, &hash).unwrap_or(false)
        })
        .await
        .unwrap_or(false)
    }
}

/// `Authorization: Basic base64(user:password)`. No `Debug` outside tests: it holds a password.
#[cfg_attr(test, derive(Debug, PartialEq, Eq))]
struct Credentials {
    user: Vec<u8>,
    password: Vec<u8>,
}

impl Credentials {
    /// `None` for anything but well-formed basic credentials. Bytes, not strings: Go does not
    /// insist on UTF-8 either, and a non-UTF-8 name simply matches no user.
    fn parse(value: &HeaderValue) -> Option<Self> {
        let value = value.as_bytes();
        let space = value.iter().position(|&byte| byte == b' ')?;
        let (scheme, encoded) = value.split_at(space);
        if !scheme.eq_ignore_ascii_case(b"Basic") {
            return None;
        }
        let mut decoded = BASE64.decode(encoded.trim_ascii()).ok()?;
        let colon = decoded.iter().position(|&byte| byte == b':')?;
        let password = decoded.split_off(colon + 1);
        decoded.truncate(colon);
        Some(Self {
            user: decoded,
            password,
        })
    }
}

/// Length-prefixed, so that no two (user, hash, password) triples hash the same input.
fn cache_key(user: &[u8], hash: &str, password: &[u8]) -> [u8; 32] {
    let mut digest = Sha256::new();
    for part in [user, hash.as_bytes(), password] {
        digest.update((part.len() as u64).to_be_bytes());
        digest.update(part);
    }
    digest.finalize().into()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn header(user: &str, password: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        let value = format!("Basic {}", BASE64.encode(format!("{user}:{password}")));
        headers.insert(AUTHORIZATION, value.parse().expect("header value"));
        headers
    }

    fn auth_for(users: &[(&str, &str)]) -> BasicAuth {
        let map = users
            .iter()
            .map(|(name, password)| {
                let hash = bcrypt::hash(password, 4).expect("hash");
                ((*name).to_owned(), hash)
            })
            .collect();
        let users = super::users(map).expect("valid users");
        BasicAuth::new(users, Arc::new(tokio::sync::Mutex::new(()))).expect("users")
    }

    #[test]
    fn no_users_means_no_auth() {
        assert!(BasicAuth::new(Vec::new(), Arc::default()).is_none());
    }

    #[test]
    fn hashes_are_validated() {
        let map = BTreeMap::from([("alice".to_owned(), "secret".to_owned())]);
        let message = users(map).expect_err("plain-text password").to_string();
        assert!(message.starts_with("basic_auth_users.alice:"), "{message}");

        let hash = bcrypt::hash("pw", 4).expect("hash");
        let too_cheap = hash.replacen("$04$", "$03$", 1);
        let map = BTreeMap::from([("bob".to_owned(), too_cheap)]);
        let message = users(map).expect_err("cost 3").to_string();
        assert!(message.contains("cost 3"), "{message}");

        // htpasswd writes $2y$, Go and Python $2a$/$2b$.
        let two_y = hash.replacen("$2b$", "$2y$", 1);
        let map = BTreeMap::from([("carol".to_owned(), two_y)]);
        assert_eq!(users(map).expect("$2y$")[0].cost, 4);
    }

    #[tokio::test]
    async fn right_password_is_accepted() {
        let auth = auth_for(&[("alice", "wonderland"), ("bob", "builder")]);
        assert_eq!(auth.check(&header("alice", "wonderland")).await, Ok(()));
        assert_eq!(auth.check(&header("bob", "builder")).await, Ok(()));
        // Colons after the first belong to the password.
        let colons = auth_for(&[("carol", "a:b")]);
        assert_eq!(colons.check(&header("carol", "a:b")).await, Ok(()));
    }

    #[tokio::test]
    async fn wrong_credentials_are_rejected() {
        let auth = auth_for(&[("alice", "wonderland"), ("bob", "builder")]);
        let unauthorized = Err(Rejection::Unauthorized);
        assert_eq!(auth.check(&header("alice", "builder")).await, unauthorized);
        assert_eq!(
            auth.check(&header("mallory", "wonderland")).await,
            unauthorized
        );
        // The decoy user's own password does not let an unknown user in.
        assert_eq!(
            auth.check(&header("alicia", "wonderland")).await,
            unauthorized
        );
        assert_eq!(
            auth.check(&header("Alice", "wonderland")).await,
            unauthorized
        );
        assert_eq!(auth.check(&HeaderMap::new()).await, unauthorized);
        assert_eq!(
            auth.check(&header("alice", &"x".repeat(100))).await,
            unauthorized
        );
    }

    #[tokio::test]
    async fn malformed_headers_are_rejected() {
        let auth = auth_for(&[("alice", "wonderland")]);
        let good = BASE64.encode("alice:wonderland");
        for value in [
            format!("Bearer {good}"),
            format!("Basic{good}"),
            "Basic".to_owned(),
            "Basic !!!not-base64!!!".to_owned(),
            format!("Basic {}", BASE64.encode("alice-wonderland")),
            format!("Basic {}", &good[..good.len() - 2]),
            String::new(),
        ] {
            let mut headers = HeaderMap::new();
            headers.insert(AUTHORIZATION, value.parse().expect("header value"));
            assert_eq!(
                auth.check(&headers).await,
                Err(Rejection::Unauthorized),
                "{value:?}"
            );
        }
        let mut headers = HeaderMap::new();
        let binary = HeaderValue::from_bytes(b"Basic \xff\xfe").expect("opaque bytes");
        headers.insert(AUTHORIZATION, binary);
        assert_eq!(auth.check(&headers).await, Err(Rejection::Unauthorized));
    }

    #[test]
    fn credentials_parsing() {
        let parse = |value: &str| Credentials::parse(&value.parse().expect("header value"));
        let expected = Some(Credentials {
            user: b"alice".to_vec(),
            password: b"wonder:land".to_vec(),
        });
        assert_eq!(
            parse(&format!("Basic {}", BASE64.encode("alice:wonder:land"))),
            expected
        );
        assert_eq!(
            parse(&format!("basic  {}", BASE64.encode("alice:wonder:land"))),
            expected
        );
        let empty = Some(Credentials {
            user: Vec::new(),
            password: Vec::new(),
        });
        assert_eq!(parse(&format!("Basic {}", BASE64.encode(":"))), empty);
    }

    #[tokio::test]
    async fn verified_credentials_are_cached_without_bcrypt() {
        let auth = auth_for(&[("alice", "wonderland")]);
        assert_eq!(auth.check(&header("alice", "wonderland")).await, Ok(()));

        // With the bcrypt lock held, a second check can only finish by hitting the cache.
        let _bcrypt = Arc::clone(&auth.bcrypt_lock).lock_owned().await;
        let (right, wrong) = (header("alice", "wonderland"), header("alice", "wonderlan"));
        let cached = tokio::time::timeout(Duration::from_secs(5), auth.check(&right));
        assert_eq!(cached.await, Ok(Ok(())));
        let wrong = tokio::time::timeout(Duration::from_millis(100), auth.check(&wrong));
        assert!(
            wrong.await.is_err(),
            "a wrong password is not cached, it waits for bcrypt"
        );
    }

    #[tokio::test]
    async fn cache_holds_digests_and_stays_bounded() {
        let auth = auth_for(&[("alice", "wonderland")]);
        assert_eq!(auth.check(&header("alice", "wonderland")).await, Ok(()));
        let expected = cache_key(b"alice", &auth.users[0].hash, b"wonderland");
        assert_eq!(*lock(&auth.verified), HashSet::from([expected]));

        // Fill up with other digests (bytes 0..=254 repeated; 0xff stays free).
        let others = (0..CACHE_CAPACITY - 1).map(|i| [u8::try_from(i).expect("< 255"); 32]);
        lock(&auth.verified).extend(others);
        assert_eq!(lock(&auth.verified).len(), CACHE_CAPACITY);
        assert_eq!(auth.check(&header("alice", "wonderland")).await, Ok(()));
        assert_eq!(
            lock(&auth.verified).len(),
            CACHE_CAPACITY,
            "hit: nothing added"
        );

        lock(&auth.verified).remove(&expected);
        lock(&auth.verified).insert([0xff; 32]);
        assert_eq!(auth.check(&header("alice", "wonderland")).await, Ok(()));
        assert_eq!(
            *lock(&auth.verified),
            HashSet::from([expected]),
            "full: cleared"
        );
    }

    #[test]
    fn cache_keys_are_unambiguous() {
        assert_ne!(cache_key(b"ab", "c", b"d"), cache_key(b"a", "bc", b"d"));
        assert_ne!(cache_key(b"a", "b", b"cd"), cache_key(b"a", "bc", b"d"));
    }

    #[test]
    fn decoy_is_the_most_expensive_hash() {
        let cheap = bcrypt::hash("a", 4).expect("hash");
        let dear = bcrypt::hash("b", 5).expect("hash");
        let map = BTreeMap::from([("a".to_owned(), cheap), ("b".to_owned(), dear)]);
        let auth = BasicAuth::new(users(map).expect("users"), Arc::default()).expect("users");
        assert_eq!(auth.users[auth.decoy].name, "b");
        assert_eq!(auth.find(b"a"), Some(0));
        assert_eq!(auth.find(b"b"), Some(1));
        assert_eq!(auth.find(b"c"), None);
        assert_eq!(auth.find(b""), None);
    }
}
