//! Who is calling: bearer-token verification into a [`Caller`], and the signer with which PIM's
//! services mint their own identities for their peers. Expiry is judged against the injectable
//! clock, never the wall clock, so tests move time instead of sleeping. Keys are static (PEM, or
//! HS256 in dev mode) or an identity provider's JWKS, cached and refreshed in the background.

mod caller;
mod jwks;
mod signer;
mod verifier;

pub use caller::{Caller, CallerKind};
pub use jwks::{JwksCache, JwksConfig, JwksError, JwksFailure};
pub use signer::{Claims, TokenSigner};
pub use verifier::{AuthError, KeyMaterial, Verifier};
