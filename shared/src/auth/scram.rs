//! SCRAM-SHA-256 (RFC 5802, RFC 7677) as two small state machines with no I/O: the client's and the
//! server's. The caller moves the messages (inside `Authenticate` requests) and supplies the random nonces.
//!
//! Only salted, iterated keys are stored ([`ScramCredential`]); a password exists only on the client, and
//! neither side ever logs a message that carries a proof.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

pub const MECHANISM: &str = "SCRAM-SHA-256";
/// RFC 7677's floor, and Kafka's.
pub const ITERATIONS_MIN: u32 = 4096;
/// A bound on the work a stored credential can make a client do.
pub const ITERATIONS_MAX: u32 = 1_000_000;
pub const KEY_BYTES: usize = 32;
/// User names are 1-128 characters of `[A-Za-z0-9._@:-]`: nothing SCRAM would have to escape.
pub const USER_NAME_CHARS_MAX: usize = 128;
const GS2_HEADER: &str = "n,,";
/// base64("n,,"): the channel binding a client without channel binding sends.
const CHANNEL_BINDING: &str = "biws";
const MESSAGE_CHARS_MAX: usize = 1024;

type HmacSha256 = Hmac<Sha256>;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScramError {
    #[error("malformed SCRAM message: {0}")]
    Malformed(&'static str),
    #[error("invalid user name (1-{USER_NAME_CHARS_MAX} characters of A-Z a-z 0-9 . _ @ : -)")]
    InvalidUserName,
    /// Wrong password or unknown user: deliberately the same error.
    #[error("authentication failed: unknown user or wrong password")]
    Failed,
    #[error("the server's signature does not match: it does not know this user's credential")]
    ServerNotAuthentic,
    #[error("iteration count {0} is outside {ITERATIONS_MIN}..={ITERATIONS_MAX}")]
    Iterations(u32),
}

/// What a server keeps for a user: never the password.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScramCredential {
    #[serde(with = "serde_bytes")]
    pub salt: Vec<u8>,
    pub iterations: u32,
    #[serde(with = "serde_bytes")]
    pub stored_key: Vec<u8>,
    #[serde(with = "serde_bytes")]
    pub server_key: Vec<u8>,
}

impl std::fmt::Debug for ScramCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScramCredential").field("iterations", &self.iterations).finish_non_exhaustive()
    }
}

impl ScramCredential {
    /// Derives the stored keys from a password (the client side of `oxbow user create` does this, so the
    /// password never travels).
    pub fn new(password: &str, salt: &[u8], iterations: u32) -> Result<ScramCredential, ScramError> {
        let salted = salted_password(password, salt, iterations)?;
        Ok(ScramCredential::from_salted(&salted, salt, iterations))
    }

    pub fn from_salted(salted: &[u8; KEY_BYTES], salt: &[u8], iterations: u32) -> ScramCredential {
        let client_key = hmac(salted, b"Client Key");
        ScramCredential {
            salt: salt.to_vec(),
            iterations,
            stored_key: Sha256::digest(client_key).to_vec(),
            server_key: hmac(salted, b"Server Key").to_vec(),
        }
    }

    /// Checks what a server receives before storing it.
    pub fn validate(&self) -> Result<(), ScramError> {
        if !(ITERATIONS_MIN..=ITERATIONS_MAX).contains(&self.iterations) {
            return Err(ScramError::Iterations(self.iterations));
        }
        if self.salt.is_empty() || self.salt.len() > 64 {
            return Err(ScramError::Malformed("salt must be 1-64 bytes"));
        }
        if self.stored_key.len() != KEY_BYTES || self.server_key.len() != KEY_BYTES {
            return Err(ScramError::Malformed("keys must be 32 bytes"));
        }
        Ok(())
    }
}

/// PBKDF2-HMAC-SHA-256, the expensive step (bounded by `ITERATIONS_MAX`).
pub fn salted_password(password: &str, salt: &[u8], iterations: u32) -> Result<[u8; KEY_BYTES], ScramError> {
    if !(ITERATIONS_MIN..=ITERATIONS_MAX).contains(&iterations) {
        return Err(ScramError::Iterations(iterations));
    }
    let mut out = [0u8; KEY_BYTES];
    pbkdf2::pbkdf2_hmac::<Sha256>(password.as_bytes(), salt, iterations, &mut out);
    Ok(out)
}

pub fn validate_user_name(name: &str) -> Result<(), ScramError> {
    let valid = !name.is_empty()
        && name.len() <= USER_NAME_CHARS_MAX
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'@' | b':' | b'-'));
    if valid {
        Ok(())
    } else {
        Err(ScramError::InvalidUserName)
    }
}

/// The client's side. `salted` lets a caller that authenticates often (a broker to its peers) skip PBKDF2
/// when the server's salt and iteration count are the ones it computed for.
pub struct ScramClient {
    user: String,
    password: String,
    client_nonce: String,
    state: ClientState,
}

enum ClientState {
    Initial,
    SentFinal { server_signature: [u8; KEY_BYTES] },
}

impl ScramClient {
    /// `client_nonce`: printable random characters (no ','), e.g. base64 of 18 random bytes.
    pub fn new(user: &str, password: &str, client_nonce: &str) -> Result<ScramClient, ScramError> {
        validate_user_name(user)?;
        if client_nonce.is_empty() || !client_nonce.bytes().all(|b| (0x21..=0x7e).contains(&b) && b != b',') {
            return Err(ScramError::Malformed("nonce must be printable characters other than ','"));
        }
        Ok(ScramClient {
            user: user.to_string(),
            password: password.to_string(),
            client_nonce: client_nonce.to_string(),
            state: ClientState::Initial,
        })
    }

    pub fn client_first(&self) -> String {
        format!("{GS2_HEADER}{}", self.client_first_bare())
    }

    fn client_first_bare(&self) -> String {
        format!("n={},r={}", self.user, self.client_nonce)
    }

    /// Takes the server-first message, returns the client-final message and the salted password used
    /// (to pass back as `cached_salted` next time).
    pub fn client_final(
        &mut self,
        server_first: &str,
        cached_salted: Option<&SaltedPassword>,
    ) -> Result<(String, SaltedPassword), ScramError> {
        let fields = parse_fields(server_first)?;
        let nonce = field(&fields, 'r')?;
        let salt = BASE64.decode(field(&fields, 's')?).map_err(|_| ScramError::Malformed("salt is not base64"))?;
        let iterations: u32 = field(&fields, 'i')?.parse().map_err(|_| ScramError::Malformed("bad iteration count"))?;
        if !nonce.starts_with(&self.client_nonce) || nonce.len() == self.client_nonce.len() {
            return Err(ScramError::Malformed("the server's nonce does not extend the client's"));
        }
        let salted = match cached_salted {
            Some(cached) if cached.salt == salt && cached.iterations == iterations => cached.key,
            _ => salted_password(&self.password, &salt, iterations)?,
        };
        let without_proof = format!("c={CHANNEL_BINDING},r={nonce}");
        let auth_message = format!("{},{server_first},{without_proof}", self.client_first_bare());
        let client_key = hmac(&salted, b"Client Key");
        let stored_key: [u8; KEY_BYTES] = Sha256::digest(client_key).into();
        let client_signature = hmac(&stored_key, auth_message.as_bytes());
        let proof: Vec<u8> = client_key.iter().zip(client_signature).map(|(a, b)| a ^ b).collect();
        let server_key = hmac(&salted, b"Server Key");
        self.state = ClientState::SentFinal { server_signature: hmac(&server_key, auth_message.as_bytes()) };
        let message = format!("{without_proof},p={}", BASE64.encode(proof));
        Ok((message, SaltedPassword { salt, iterations, key: salted }))
    }

    /// Checks the server-final message: the server proves it knows the credential too.
    pub fn verify_server_final(&self, server_final: &str) -> Result<(), ScramError> {
        let ClientState::SentFinal { server_signature } = &self.state else {
            return Err(ScramError::Malformed("server-final before client-final"));
        };
        let fields = parse_fields(server_final)?;
        if let Ok(error) = field(&fields, 'e') {
            return Err(if error == "invalid-proof" || error == "unknown-user" {
                ScramError::Failed
            } else {
                ScramError::Malformed("the server reported an error")
            });
        }
        let verifier =
            BASE64.decode(field(&fields, 'v')?).map_err(|_| ScramError::Malformed("verifier is not base64"))?;
        if bool::from(verifier.ct_eq(server_signature)) {
            Ok(())
        } else {
            Err(ScramError::ServerNotAuthentic)
        }
    }
}

/// A password's PBKDF2 output for one salt and iteration count.
#[derive(Clone)]
pub struct SaltedPassword {
    pub salt: Vec<u8>,
    pub iterations: u32,
    pub key: [u8; KEY_BYTES],
}

/// The server's side of one exchange.
pub struct ScramServer {
    state: ServerState,
}

enum ServerState {
    AwaitingFirst,
    AwaitingFinal {
        user: String,
        /// `None` for an unknown user: the exchange runs to the end and fails like a wrong password, so
        /// the answer does not reveal which user names exist.
        credential: Option<ScramCredential>,
        nonce: String,
        client_first_bare: String,
        server_first: String,
    },
    Done,
}

/// What the server says next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerStep {
    /// Send this server-first message and wait for the client's final one.
    Continue(String),
    /// Authenticated: send this server-final message; the user is the principal.
    Authenticated { server_final: String, user: String },
}

impl Default for ScramServer {
    fn default() -> Self {
        ScramServer { state: ServerState::AwaitingFirst }
    }
}

impl ScramServer {
    /// Handles the client's next message. `lookup` finds a user's credential; `fake_salt` gives an unknown
    /// user a stable salt (so probing twice shows the same one); `server_nonce` is fresh random text.
    pub fn step(
        &mut self,
        message: &str,
        lookup: impl FnOnce(&str) -> Option<ScramCredential>,
        fake_salt: impl FnOnce(&str) -> Vec<u8>,
        server_nonce: &str,
    ) -> Result<ServerStep, ScramError> {
        if message.len() > MESSAGE_CHARS_MAX {
            return Err(ScramError::Malformed("message too long"));
        }
        match std::mem::replace(&mut self.state, ServerState::Done) {
            ServerState::AwaitingFirst => {
                let bare = message.strip_prefix(GS2_HEADER).ok_or(ScramError::Malformed(
                    "client-first must start with 'n,,' (no channel binding, no authorization id)",
                ))?;
                let fields = parse_fields(bare)?;
                if fields.first().map(|(key, _)| *key) != Some('n') || fields.get(1).map(|(key, _)| *key) != Some('r') {
                    return Err(ScramError::Malformed("client-first-bare must be n=...,r=..."));
                }
                let user = field(&fields, 'n')?.to_string();
                validate_user_name(&user)?;
                let client_nonce = field(&fields, 'r')?;
                if client_nonce.is_empty() {
                    return Err(ScramError::Malformed("empty nonce"));
                }
                let credential = lookup(&user);
                let (salt, iterations) = match &credential {
                    Some(credential) => (credential.salt.clone(), credential.iterations),
                    None => (fake_salt(&user), ITERATIONS_MIN),
                };
                let nonce = format!("{client_nonce}{server_nonce}");
                let server_first = format!("r={nonce},s={},i={iterations}", BASE64.encode(salt));
                self.state = ServerState::AwaitingFinal {
                    user,
                    credential,
                    nonce,
                    client_first_bare: bare.to_string(),
                    server_first: server_first.clone(),
                };
                Ok(ServerStep::Continue(server_first))
            }
            ServerState::AwaitingFinal { user, credential, nonce, client_first_bare, server_first } => {
                let fields = parse_fields(message)?;
                if field(&fields, 'c')? != CHANNEL_BINDING {
                    return Err(ScramError::Malformed("channel binding must be 'biws'"));
                }
                if field(&fields, 'r')? != nonce {
                    return Err(ScramError::Failed);
                }
                let (without_proof, proof) =
                    message.rsplit_once(",p=").ok_or(ScramError::Malformed("client-final has no proof"))?;
                let proof = BASE64.decode(proof).map_err(|_| ScramError::Malformed("proof is not base64"))?;
                let credential = credential.ok_or(ScramError::Failed)?;
                if proof.len() != KEY_BYTES {
                    return Err(ScramError::Failed);
                }
                let auth_message = format!("{client_first_bare},{server_first},{without_proof}");
                let client_signature = hmac(&credential.stored_key, auth_message.as_bytes());
                let client_key: Vec<u8> = proof.iter().zip(client_signature).map(|(a, b)| a ^ b).collect();
                let stored_key = Sha256::digest(&client_key);
                if !bool::from(stored_key.as_slice().ct_eq(&credential.stored_key)) {
                    return Err(ScramError::Failed);
                }
                let server_signature = hmac(&credential.server_key, auth_message.as_bytes());
                Ok(ServerStep::Authenticated { server_final: format!("v={}", BASE64.encode(server_signature)), user })
            }
            ServerState::Done => Err(ScramError::Malformed("the exchange is over")),
        }
    }
}

fn hmac(key: &[u8], message: &[u8]) -> [u8; KEY_BYTES] {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(message);
    mac.finalize().into_bytes().into()
}

/// Splits `a=x,b=y` into pairs; values may contain '=' (base64) but not ','.
fn parse_fields(message: &str) -> Result<Vec<(char, &str)>, ScramError> {
    if message.len() > MESSAGE_CHARS_MAX {
        return Err(ScramError::Malformed("message too long"));
    }
    message
        .split(',')
        .map(|part| {
            let mut chars = part.chars();
            match (chars.next(), chars.next()) {
                (Some(key), Some('=')) if key.is_ascii_alphabetic() => Ok((key, &part[2..])),
                _ => Err(ScramError::Malformed("attribute is not k=value")),
            }
        })
        .collect()
}

fn field<'a>(fields: &[(char, &'a str)], key: char) -> Result<&'a str, ScramError> {
    fields.iter().find(|(k, _)| *k == key).map(|(_, value)| *value).ok_or(ScramError::Malformed("missing attribute"))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// RFC 7677 section 3's example exchange, byte for byte.
    #[test]
    fn the_rfc_7677_example_exchange_is_reproduced() {
        let mut client = ScramClient::new("user", "pencil", "rOprNGfwEbeRWgbNEkqO").unwrap();
        assert_eq!(client.client_first(), "n,,n=user,r=rOprNGfwEbeRWgbNEkqO");
        let salt = BASE64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let credential = ScramCredential::new("pencil", &salt, 4096).unwrap();
        let mut server = ScramServer::default();
        let step = server
            .step(&client.client_first(), |_| Some(credential.clone()), |_| vec![], "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0")
            .unwrap();
        let ServerStep::Continue(server_first) = step else { panic!("expected server-first") };
        assert_eq!(
            server_first,
            "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
        );
        let (client_final, _) = client.client_final(&server_first, None).unwrap();
        assert_eq!(
            client_final,
            "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
        );
        let step = server.step(&client_final, |_| None, |_| vec![], "").unwrap();
        let ServerStep::Authenticated { server_final, user } = step else { panic!("expected success") };
        assert_eq!(server_final, "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=");
        assert_eq!(user, "user");
        client.verify_server_final(&server_final).unwrap();
    }

    fn exchange(password: &str, stored: Option<ScramCredential>) -> Result<(), ScramError> {
        let mut client = ScramClient::new("alice", password, "abc").unwrap();
        let mut server = ScramServer::default();
        let ServerStep::Continue(first) =
            server.step(&client.client_first(), |_| stored, |_| b"fake-salt".to_vec(), "xyz")?
        else {
            panic!("expected server-first")
        };
        let (last, _) = client.client_final(&first, None)?;
        match server.step(&last, |_| None, |_| vec![], "")? {
            ServerStep::Authenticated { server_final, .. } => client.verify_server_final(&server_final),
            ServerStep::Continue(_) => panic!("expected the end"),
        }
    }

    #[test]
    fn a_wrong_password_and_an_unknown_user_fail_alike() {
        let stored = ScramCredential::new("right", b"salt", 4096).unwrap();
        assert_eq!(exchange("right", Some(stored.clone())), Ok(()));
        assert_eq!(exchange("wrong", Some(stored)), Err(ScramError::Failed));
        assert_eq!(exchange("right", None), Err(ScramError::Failed));
    }

    #[test]
    fn a_server_without_the_credential_is_caught_by_the_client() {
        let mut client = ScramClient::new("alice", "pw", "abc").unwrap();
        let first = format!("r=abcxyz,s={},i=4096", BASE64.encode(b"s"));
        client.client_final(&first, None).unwrap();
        assert_eq!(client.verify_server_final("v=AAAA"), Err(ScramError::ServerNotAuthentic));
        assert_eq!(client.verify_server_final("e=invalid-proof"), Err(ScramError::Failed));
    }

    #[test]
    fn out_of_range_iterations_and_bad_names_are_refused() {
        assert_eq!(salted_password("p", b"s", 1).unwrap_err(), ScramError::Iterations(1));
        let mut client = ScramClient::new("alice", "pw", "abc").unwrap();
        let huge = format!("r=abcxyz,s={},i=4000000000", BASE64.encode(b"s"));
        assert!(client.client_final(&huge, None).is_err(), "a server must not make the client spin");
        for bad in ["", "a,b", "a=b", "é", &"x".repeat(129)] {
            assert!(validate_user_name(bad).is_err(), "{bad:?} accepted");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Arbitrary bytes in either step never panic and never authenticate.
        #[test]
        fn arbitrary_messages_never_authenticate(first in ".{0,200}", last in ".{0,300}") {
            let stored = ScramCredential::from_salted(&[7; KEY_BYTES], b"salt", 4096);
            let mut server = ScramServer::default();
            if let Ok(ServerStep::Continue(_)) = server.step(&first, |_| Some(stored.clone()), |_| vec![1], "n") {
                let step = server.step(&last, |_| None, |_| vec![], "");
                let authenticated = matches!(step, Ok(ServerStep::Authenticated { .. }));
                prop_assert!(!authenticated, "arbitrary bytes authenticated");
            }
        }
    }
}
