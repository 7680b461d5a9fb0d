//! Who is calling: bearer-token verification into a [`Caller`], and the signer with which PIM's
//! services mint their own identities for their peers. Expiry is judged against the injectable
//! clock, never the wall clock, so tests move time instead of sleeping.

mod caller;
mod signer;
mod verifier;

pub use caller::{Caller, CallerKind};
pub use signer::{Claims, TokenSigner};
pub use verifier::{AuthError, KeyMaterial, Verifier};
