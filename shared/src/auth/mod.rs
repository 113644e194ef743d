//! Authentication shared by clients and brokers: the SCRAM-SHA-256 exchange (pure) and the credentials a
//! client presents.

#[cfg(feature = "certs")]
pub mod certs;
pub mod scram;

use std::sync::{Arc, Mutex};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;

/// The user name prefix of broker principals: `broker:<node id>`. Clients cannot create such users.
pub const BROKER_USER_PREFIX: &str = "broker:";

/// A user name and password a client authenticates with (SCRAM-SHA-256). The password stays in memory
/// and is never printed: `Debug` shows only the user.
#[derive(Clone)]
pub struct Credentials {
    pub user: String,
    password: Arc<str>,
    /// PBKDF2 is the expensive step: remembered for the salt and iteration count the broker last sent.
    salted: Arc<Mutex<Option<scram::SaltedPassword>>>,
}

impl Credentials {
    pub fn new(user: impl Into<String>, password: impl Into<String>) -> Credentials {
        Credentials { user: user.into(), password: Arc::from(password.into()), salted: Arc::default() }
    }

    pub fn password(&self) -> &str {
        &self.password
    }

    pub fn cached_salted(&self) -> Option<scram::SaltedPassword> {
        self.salted.lock().expect("credentials lock").clone()
    }

    pub fn remember_salted(&self, salted: scram::SaltedPassword) {
        *self.salted.lock().expect("credentials lock") = Some(salted);
    }
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials").field("user", &self.user).finish_non_exhaustive()
    }
}

/// Fresh random printable text (base64 of `n_bytes` random bytes) for nonces and salts.
pub fn random_text(n_bytes: usize) -> String {
    BASE64.encode(random_bytes(n_bytes))
}

pub fn random_bytes(n_bytes: usize) -> Vec<u8> {
    let mut bytes = vec![0u8; n_bytes];
    getrandom::fill(&mut bytes).expect("the operating system's random source");
    bytes
}
