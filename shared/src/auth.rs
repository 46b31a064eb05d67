//! Who may do what. The caller is parsed once from the API Gateway authorizer's claims (never
//! from a request body) into a [`Caller`]; [`authorize`] is the one table that says which
//! caller may take which action on which resource, and how a refusal looks: someone else's hold
//! or booking is *not found* (no existence oracle), a role the caller lacks is *forbidden*.

use crate::ids::RestaurantId;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::fmt;
use unicode_normalization::UnicodeNormalization;

/// The group that runs flags, audits and dead letters.
pub const OPS_GROUP: &str = "holdfast-ops";
/// The group whose members may approve flag changes.
pub const FLAG_APPROVERS_GROUP: &str = "holdfast-flag-approvers";
/// Longest subject accepted (Cognito subs are 36, IAM ARNs stay well under).
pub const SUBJECT_MAX_CHARS: usize = 200;

/// An authenticated identity, compared after NFKC normalisation and case folding, so that a
/// look-alike spelling (`ＡＬＩＣＥ`, `Alice`) is the same person as `alice`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Subject(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubjectError {
    #[error("the subject is empty")]
    Empty,
    #[error("the subject is longer than {SUBJECT_MAX_CHARS} characters")]
    TooLong,
    #[error("the subject contains control characters")]
    ControlCharacter,
}

impl Subject {
    pub fn parse(raw: &str) -> Result<Self, SubjectError> {
        let s = raw.trim();
        if s.is_empty() {
            return Err(SubjectError::Empty);
        }
        if s.chars().count() > SUBJECT_MAX_CHARS {
            return Err(SubjectError::TooLong);
        }
        if s.chars().any(char::is_control) {
            return Err(SubjectError::ControlCharacter);
        }
        Ok(Self(fold(s)))
    }

    /// The normalised form: what is stored as a hold's owner and compared.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// NFKC, lower case, NFKC again (lowering can denormalise). `to_lowercase` is Unicode's full
/// lower-case mapping: it differs from full case folding only for a handful of characters
/// (e.g. `ß`), which are folded here explicitly.
fn fold(s: &str) -> String {
    let lowered: String = s.nfkc().collect::<String>().to_lowercase().replace('ß', "ss").replace('ς', "σ");
    lowered.nfkc().collect()
}

/// The caller's standing, from the groups claim.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Roles {
    pub ops: bool,
    pub flag_approver: bool,
    /// Restaurants whose staff the caller is (`restaurant:<uuid>:staff`).
    pub staff_of: BTreeSet<RestaurantId>,
}

impl Roles {
    /// Groups as API Gateway hands them over: a JSON array, or its flattening of an array
    /// claim (`[a b c]`), or a comma/space separated list. Unknown groups are ignored.
    pub fn from_groups_claim(raw: &str) -> Self {
        let groups: Vec<String> = match serde_json::from_str::<Vec<String>>(raw) {
            Ok(v) => v,
            Err(_) => raw
                .trim()
                .trim_start_matches('[')
                .trim_end_matches(']')
                .split(|c: char| c == ',' || c.is_whitespace())
                .map(|g| g.trim_matches('"').to_string())
                .filter(|g| !g.is_empty())
                .collect(),
        };
        let mut roles = Roles::default();
        for g in groups {
            match g.as_str() {
                OPS_GROUP => roles.ops = true,
                FLAG_APPROVERS_GROUP => roles.flag_approver = true,
                other => {
                    let staff = other.strip_prefix("restaurant:").and_then(|r| r.strip_suffix(":staff"));
                    if let Some(id) = staff.and_then(|id| id.parse::<RestaurantId>().ok()) {
                        roles.staff_of.insert(id);
                    }
                }
            }
        }
        roles
    }
}

/// The authenticated caller of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub subject: Subject,
    pub roles: Roles,
}

impl Caller {
    pub fn new(subject: Subject, roles: Roles) -> Self {
        Self { subject, roles }
    }

    pub fn is_staff_of(&self, r: RestaurantId) -> bool {
        self.roles.staff_of.contains(&r)
    }
}

/// Everything a route can do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Action {
    Quote,
    HoldCreate,
    HoldRead,
    HoldConfirm,
    HoldRelease,
    BookingRequest,
    BookingRead,
    BookingChange,
    BookingCancel,
    FlagPropose,
    FlagReadProposal,
    FlagApprove,
    FlagReject,
    FlagApply,
    FlagBreakGlass,
    FlagAcknowledgeReview,
    FlagReadAudit,
    FlagReadMatrix,
}

impl Action {
    pub const ALL: [Action; 18] = [
        Self::Quote,
        Self::HoldCreate,
        Self::HoldRead,
        Self::HoldConfirm,
        Self::HoldRelease,
        Self::BookingRequest,
        Self::BookingRead,
        Self::BookingChange,
        Self::BookingCancel,
        Self::FlagPropose,
        Self::FlagReadProposal,
        Self::FlagApprove,
        Self::FlagReject,
        Self::FlagApply,
        Self::FlagBreakGlass,
        Self::FlagAcknowledgeReview,
        Self::FlagReadAudit,
        Self::FlagReadMatrix,
    ];
}

/// What the action is on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resource<'a> {
    /// A restaurant's public booking surface (quote, new hold).
    Restaurant(RestaurantId),
    /// A hold or booking: its restaurant and its owner (`None`: created before owners were
    /// stored; only staff and ops may act on it).
    Owned { restaurant: RestaurantId, owner: Option<&'a Subject> },
    /// The flag governance surface.
    Flags,
}

/// The answer. A refusal says how it must look to the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allow,
    /// Answer as if the resource did not exist (someone else's hold or booking).
    NotFound,
    /// The caller lacks the role for this action.
    Forbidden,
}

/// The one authorization table (route action × caller × resource → decision).
pub fn authorize(caller: &Caller, action: Action, resource: &Resource<'_>) -> Decision {
    use Action::*;
    let allow = |yes: bool, no: Decision| if yes { Decision::Allow } else { no };
    match (action, resource) {
        // Any authenticated person may look for and hold a table anywhere: that is booking.
        (Quote | HoldCreate | BookingRequest, Resource::Restaurant(_)) => Decision::Allow,
        (
            HoldRead | HoldConfirm | HoldRelease | BookingRead | BookingChange | BookingCancel,
            Resource::Owned { restaurant, owner },
        ) => {
            let owner_acts = owner.is_some_and(|o| *o == caller.subject);
            let staff_acts = caller.is_staff_of(*restaurant);
            let ops_repairs = owner.is_none() && caller.roles.ops;
            allow(owner_acts || staff_acts || ops_repairs, Decision::NotFound)
        }
        (FlagApprove, Resource::Flags) => allow(caller.roles.flag_approver, Decision::Forbidden),
        // Break-glass is an ops action; the registry limits it to kill switches.
        (FlagPropose | FlagReject | FlagReadAudit | FlagReadMatrix | FlagBreakGlass, Resource::Flags) => {
            allow(caller.roles.ops, Decision::Forbidden)
        }
        // Reading a proposal, applying an approved one and acknowledging a break-glass review
        // are for either governance role (the review's second person is checked by the workflow).
        (FlagReadProposal | FlagApply | FlagAcknowledgeReview, Resource::Flags) => {
            allow(caller.roles.ops || caller.roles.flag_approver, Decision::Forbidden)
        }
        // An action on the wrong kind of resource is a routing bug: deny.
        (_, Resource::Owned { .. }) => Decision::NotFound,
        (_, _) => Decision::Forbidden,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    const HERE: RestaurantId = RestaurantId(Uuid::from_u128(1));
    const THERE: RestaurantId = RestaurantId(Uuid::from_u128(2));

    fn caller(sub: &str, groups: &str) -> Caller {
        Caller::new(Subject::parse(sub).expect("subject"), Roles::from_groups_claim(groups))
    }

    /// The caller kinds of the route matrix, in the order of the table below.
    fn kinds() -> Vec<(&'static str, Caller)> {
        vec![
            ("owner", caller("alice", "")),
            ("guest", caller("mallory", "")),
            ("staff_here", caller("sam", &format!("[restaurant:{}:staff]", HERE.0))),
            ("staff_there", caller("tom", &format!("[restaurant:{}:staff]", THERE.0))),
            ("ops", caller("olga", "[holdfast-ops]")),
            ("approver", caller("amir", "[holdfast-flag-approvers]")),
        ]
    }

    fn resource(a: Action) -> Resource<'static> {
        static ALICE: std::sync::OnceLock<Subject> = std::sync::OnceLock::new();
        let alice = ALICE.get_or_init(|| Subject::parse("alice").expect("subject"));
        match a {
            Action::Quote | Action::HoldCreate | Action::BookingRequest => Resource::Restaurant(HERE),
            Action::HoldRead
            | Action::HoldConfirm
            | Action::HoldRelease
            | Action::BookingRead
            | Action::BookingChange
            | Action::BookingCancel => Resource::Owned { restaurant: HERE, owner: Some(alice) },
            _ => Resource::Flags,
        }
    }

    #[test]
    fn the_route_matrix_is_exactly_this_table() {
        // A = allow, N = not found, F = forbidden; columns follow `kinds()`.
        let table: [(Action, &str); 18] = [
            (Action::Quote, "AAAAAA"),
            (Action::HoldCreate, "AAAAAA"),
            (Action::HoldRead, "ANANNN"),
            (Action::HoldConfirm, "ANANNN"),
            (Action::HoldRelease, "ANANNN"),
            (Action::BookingRequest, "AAAAAA"),
            (Action::BookingRead, "ANANNN"),
            (Action::BookingChange, "ANANNN"),
            (Action::BookingCancel, "ANANNN"),
            (Action::FlagPropose, "FFFFAF"),
            (Action::FlagReadProposal, "FFFFAA"),
            (Action::FlagApprove, "FFFFFA"),
            (Action::FlagReject, "FFFFAF"),
            (Action::FlagApply, "FFFFAA"),
            (Action::FlagBreakGlass, "FFFFAF"),
            (Action::FlagAcknowledgeReview, "FFFFAA"),
            (Action::FlagReadAudit, "FFFFAF"),
            (Action::FlagReadMatrix, "FFFFAF"),
        ];
        assert_eq!(table.map(|(a, _)| a), Action::ALL, "every action has a row");
        for (action, row) in table {
            for ((name, c), want) in kinds().iter().zip(row.chars()) {
                let want = match want {
                    'A' => Decision::Allow,
                    'N' => Decision::NotFound,
                    _ => Decision::Forbidden,
                };
                assert_eq!(authorize(c, action, &resource(action)), want, "{action:?} by {name}");
            }
        }
    }

    #[test]
    fn rows_without_an_owner_are_for_staff_and_ops_only() {
        let orphan = Resource::Owned { restaurant: HERE, owner: None };
        let got: String = kinds()
            .iter()
            .map(|(_, c)| match authorize(c, Action::HoldConfirm, &orphan) {
                Decision::Allow => 'A',
                Decision::NotFound => 'N',
                Decision::Forbidden => 'F',
            })
            .collect();
        assert_eq!(got, "NNANAN");
    }

    #[test]
    fn look_alike_subjects_are_the_same_person() {
        let alice = Subject::parse("alice").expect("subject");
        for same in ["Alice", " ALICE ", "ａｌｉｃｅ", "Ａｌｉｃｅ"] {
            assert_eq!(Subject::parse(same).expect("subject"), alice, "{same:?}");
        }
        assert_eq!(Subject::parse("STRASSE").expect("s"), Subject::parse("straße").expect("s"));
        assert_ne!(Subject::parse("alicia").expect("s"), alice);
        assert_eq!(Subject::parse(" "), Err(SubjectError::Empty));
        assert_eq!(Subject::parse("al\u{0}ice"), Err(SubjectError::ControlCharacter));
        assert_eq!(Subject::parse(&"a".repeat(201)), Err(SubjectError::TooLong));
    }

    #[test]
    fn groups_parse_in_every_shape_api_gateway_sends() {
        let r = format!("restaurant:{}:staff", HERE.0);
        for raw in [format!("[holdfast-ops {r}]"), format!("[\"holdfast-ops\",\"{r}\"]"), format!("holdfast-ops,{r}")] {
            let roles = Roles::from_groups_claim(&raw);
            assert!(roles.ops && !roles.flag_approver, "{raw}");
            assert_eq!(roles.staff_of.iter().copied().collect::<Vec<_>>(), vec![HERE], "{raw}");
        }
        let none = Roles::from_groups_claim("[holdfast-opsx restaurant:not-a-uuid:staff restaurant:1:admin]");
        assert_eq!(none, Roles::default());
    }
}
