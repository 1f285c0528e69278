//! Client tokens (contract section 5): signature with the `jsonwebtoken`
//! crate, then the contract's claim rules from `voicewatch_protocol`.
//!
//! Only algorithms that have a configured key are accepted: HS256 with
//! `VOICEWATCH_JWT_HS256_SECRET`, RS256/ES256/EdDSA with the public keys of
//! `VOICEWATCH_JWT_PUBLIC_KEYS` (PEM or JWKS files). `alg: none` and any
//! other algorithm fail.

use std::path::Path;

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode, decode_header};
use voicewatch_protocol::{Claims, ClaimsError, ClaimsLimits};

use crate::config::EdgeArgs;

#[derive(Debug, thiserror::Error)]
pub enum AuthConfigError {
    #[error("no JWT key configured: set VOICEWATCH_JWT_HS256_SECRET or VOICEWATCH_JWT_PUBLIC_KEYS")]
    NoKeys,
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: no RSA, EC P-256 or Ed25519 public key found (PEM or JWKS)")]
    NoKeyInFile { path: String },
}

/// Why a token was refused; `reason()` is the metric label.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("token is not a JWT")]
    Malformed,
    #[error("token algorithm is not accepted")]
    Algorithm,
    #[error("token signature is invalid")]
    Signature,
    #[error("token has expired")]
    Expired,
    #[error("token audience is not accepted")]
    Audience,
    #[error("token issuer is not accepted")]
    Issuer,
    #[error("token claims: {0}")]
    Claims(ClaimsError),
    #[error("token claims are invalid")]
    InvalidClaims,
}

impl AuthError {
    pub fn reason(&self) -> &'static str {
        match self {
            AuthError::Malformed => "malformed",
            AuthError::Algorithm => "algorithm",
            AuthError::Signature => "signature",
            AuthError::Expired | AuthError::Claims(ClaimsError::Expired) => "expired",
            AuthError::Audience => "audience",
            AuthError::Issuer => "issuer",
            AuthError::Claims(ClaimsError::TooManyGuilds { .. }) => "too_many_guilds",
            AuthError::Claims(ClaimsError::NoGuilds) => "no_guilds",
            AuthError::Claims(_) => "not_yet_valid",
            AuthError::InvalidClaims => "claims",
        }
    }
}

struct Key {
    alg: Algorithm,
    kid: Option<String>,
    key: DecodingKey,
}

/// Verifies client tokens. Cheap to share (`Arc`); the rejoin route uses it
/// for `Authorization: Bearer` tokens too.
pub struct JwtVerifier {
    keys: Vec<Key>,
    audience: Option<String>,
    issuer: Option<String>,
    limits: ClaimsLimits,
}

impl std::fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtVerifier")
            .field(
                "algorithms",
                &self.keys.iter().map(|k| k.alg).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl JwtVerifier {
    pub fn from_args(args: &EdgeArgs) -> Result<Self, AuthConfigError> {
        let mut keys = Vec::new();
        if let Some(secret) = args.jwt_hs256_secret.as_deref().filter(|s| !s.is_empty()) {
            keys.push(Key {
                alg: Algorithm::HS256,
                kid: None,
                key: DecodingKey::from_secret(secret.as_bytes()),
            });
        }
        for path in &args.jwt_public_keys {
            keys.extend(load_public_keys(path)?);
        }
        if keys.is_empty() {
            return Err(AuthConfigError::NoKeys);
        }
        Ok(Self {
            keys,
            audience: args.jwt_audience.clone(),
            issuer: args.jwt_issuer.clone(),
            limits: ClaimsLimits {
                max_guilds: args.max_guilds,
                leeway_secs: i64::try_from(args.jwt_leeway_secs).unwrap_or(i64::MAX),
            },
        })
    }

    /// Checks the token against the system clock.
    pub fn verify_now(&self, token: &str) -> Result<Claims, AuthError> {
        self.verify(token, crate::hub::now_ms() / 1000)
    }

    /// Checks the token at `now` (seconds since the epoch).
    pub fn verify(&self, token: &str, now: i64) -> Result<Claims, AuthError> {
        let header = decode_header(token).map_err(|e| match e.kind() {
            // jsonwebtoken has no `none` algorithm: such headers fail here.
            jsonwebtoken::errors::ErrorKind::Json(_) => AuthError::Algorithm,
            _ => AuthError::Malformed,
        })?;
        let candidates = self.keys.iter().filter(|k| {
            k.alg == header.alg
                && match (&header.kid, &k.kid) {
                    (Some(want), Some(have)) => want == have,
                    _ => true,
                }
        });
        let mut validation = Validation::new(header.alg);
        // Time claims are checked by `Claims::validate` against the caller's
        // clock, so that tests and the refresh path use one notion of now.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.set_required_spec_claims(&["exp"]);
        match &self.audience {
            Some(aud) => validation.set_audience(&[aud]),
            None => validation.validate_aud = false,
        }
        if let Some(iss) = &self.issuer {
            validation.set_issuer(&[iss]);
        }
        let mut last = AuthError::Algorithm;
        for k in candidates {
            match decode::<Claims>(token, &k.key, &validation) {
                Ok(data) => {
                    data.claims
                        .validate(now, self.limits)
                        .map_err(AuthError::Claims)?;
                    return Ok(data.claims);
                }
                Err(e) => {
                    use jsonwebtoken::errors::ErrorKind as K;
                    last = match e.kind() {
                        K::InvalidSignature => AuthError::Signature,
                        K::ExpiredSignature => return Err(AuthError::Expired),
                        K::ImmatureSignature => {
                            return Err(AuthError::Claims(ClaimsError::NotYetValid));
                        }
                        K::InvalidAudience => return Err(AuthError::Audience),
                        K::InvalidIssuer => return Err(AuthError::Issuer),
                        K::MissingRequiredClaim(_) | K::Json(_) => {
                            return Err(AuthError::InvalidClaims);
                        }
                        K::InvalidAlgorithm => AuthError::Algorithm,
                        _ => AuthError::Malformed,
                    };
                }
            }
        }
        Err(last)
    }
}

fn load_public_keys(path: &Path) -> Result<Vec<Key>, AuthConfigError> {
    let shown = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|source| AuthConfigError::Read {
        path: shown.clone(),
        source,
    })?;
    let mut keys = Vec::new();
    if let Ok(set) = serde_json::from_slice::<JwkSet>(&bytes) {
        for jwk in &set.keys {
            let alg = match &jwk.algorithm {
                AlgorithmParameters::RSA(_) => Algorithm::RS256,
                AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P256 => {
                    Algorithm::ES256
                }
                AlgorithmParameters::OctetKeyPair(p) if p.curve == EllipticCurve::Ed25519 => {
                    Algorithm::EdDSA
                }
                _ => continue,
            };
            if let Ok(key) = DecodingKey::from_jwk(jwk) {
                keys.push(Key {
                    alg,
                    kid: jwk.common.key_id.clone(),
                    key,
                });
            }
        }
    } else {
        // One file may hold several PEM blocks; each is tried as every type.
        let text = String::from_utf8_lossy(&bytes);
        for block in pem_blocks(&text) {
            let b = block.as_bytes();
            if let Ok(key) = DecodingKey::from_rsa_pem(b) {
                keys.push(Key {
                    alg: Algorithm::RS256,
                    kid: None,
                    key,
                });
            } else if let Ok(key) = DecodingKey::from_ec_pem(b) {
                keys.push(Key {
                    alg: Algorithm::ES256,
                    kid: None,
                    key,
                });
            } else if let Ok(key) = DecodingKey::from_ed_pem(b) {
                keys.push(Key {
                    alg: Algorithm::EdDSA,
                    kid: None,
                    key,
                });
            }
        }
    }
    if keys.is_empty() {
        return Err(AuthConfigError::NoKeyInFile { path: shown });
    }
    Ok(keys)
}

fn pem_blocks(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur: Option<String> = None;
    for line in text.lines() {
        if line.starts_with("-----BEGIN ") {
            cur = Some(String::new());
        }
        if let Some(c) = cur.as_mut() {
            c.push_str(line);
            c.push('\n');
        }
        if line.starts_with("-----END ") {
            out.extend(cur.take());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header, encode};
    use serde_json::json;

    fn verifier(f: impl FnOnce(&mut EdgeArgs)) -> JwtVerifier {
        let mut a = EdgeArgs::defaults();
        a.jwt_hs256_secret = Some("s3cret".into());
        f(&mut a);
        JwtVerifier::from_args(&a).unwrap()
    }

    fn hs(claims: serde_json::Value, secret: &str) -> String {
        encode(
            &Header::default(),
            &claims,
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap()
    }

    #[test]
    fn hs256_rules() {
        let v = verifier(|_| {});
        let ok = hs(json!({"sub":"3001","guilds":["2000"],"exp":2000}), "s3cret");
        assert_eq!(v.verify(&ok, 1000).unwrap().sub.to_string(), "3001");
        assert_eq!(v.verify(&ok, 2001).unwrap_err().reason(), "expired");
        let bad = hs(json!({"sub":"3001","guilds":["2000"],"exp":2000}), "other");
        assert_eq!(v.verify(&bad, 1000).unwrap_err(), AuthError::Signature);
        let noexp = hs(json!({"sub":"3001","guilds":["2000"]}), "s3cret");
        assert!(v.verify(&noexp, 1000).is_err());
        let none = format!(
            "{}.{}.",
            "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0",
            "eyJzdWIiOiIzMDAxIiwiZ3VpbGRzIjpbIjIwMDAiXSwiZXhwIjo5OTk5OTk5OTk5fQ"
        );
        assert_eq!(v.verify(&none, 1000).unwrap_err().reason(), "algorithm");
        let hs384 = encode(
            &Header::new(Algorithm::HS384),
            &json!({"sub":"3001","guilds":["2000"],"exp":2000}),
            &EncodingKey::from_secret(b"s3cret"),
        )
        .unwrap();
        assert_eq!(v.verify(&hs384, 1000).unwrap_err().reason(), "algorithm");
        let many: Vec<String> = (1..=101).map(|i| i.to_string()).collect();
        let t = hs(json!({"sub":"3001","guilds":many,"exp":2000}), "s3cret");
        assert_eq!(v.verify(&t, 1000).unwrap_err().reason(), "too_many_guilds");
        assert_eq!(v.verify("nope", 1000).unwrap_err().reason(), "malformed");
    }

    #[test]
    fn audience_and_issuer() {
        let v = verifier(|a| {
            a.jwt_audience = Some("vw".into());
            a.jwt_issuer = Some("me".into());
        });
        let ok = hs(
            json!({"sub":"1","guilds":["2"],"exp":2000,"aud":"vw","iss":"me"}),
            "s3cret",
        );
        assert!(v.verify(&ok, 1000).is_ok());
        let aud = hs(
            json!({"sub":"1","guilds":["2"],"exp":2000,"aud":"x","iss":"me"}),
            "s3cret",
        );
        assert_eq!(v.verify(&aud, 1000).unwrap_err().reason(), "audience");
        let iss = hs(
            json!({"sub":"1","guilds":["2"],"exp":2000,"aud":"vw","iss":"x"}),
            "s3cret",
        );
        assert_eq!(v.verify(&iss, 1000).unwrap_err().reason(), "issuer");
    }
}
