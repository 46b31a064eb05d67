//! The caller's identity from the API Gateway authorizer's claims, parsed once into the
//! domain's [`Caller`]. Groups come from `cognito:groups` or `groups` (the first present), as a
//! JSON array or API Gateway's flattening of an array claim (`[a b]`). Never from the body.

use holdfast_shared::auth::{Caller, Roles, Subject};
use lambda_http::{Request, RequestExt};

/// The claims that may carry the caller's groups, in the order they are looked for.
pub const GROUP_CLAIMS: [&str; 2] = ["cognito:groups", "groups"];

/// The authenticated caller, or `None` when the request carries no usable identity (the
/// gateway's authorizer would have refused it; the function refuses it again).
pub fn caller(req: &Request) -> Option<Caller> {
    let subject = Subject::parse(&crate::http::caller(req)?).ok()?;
    let ctx = req.request_context_ref()?;
    let groups = ctx
        .authorizer()
        .and_then(|a| a.jwt.as_ref())
        .and_then(|jwt| GROUP_CLAIMS.iter().find_map(|c| jwt.claims.get(*c)))
        .map(|raw| Roles::from_groups_claim(raw))
        .unwrap_or_default();
    Some(Caller::new(subject, groups))
}
