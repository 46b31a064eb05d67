//! The database constraints the code recognises by name, declared beside the migrations that
//! create them (refinery only loads `V<n>__<name>.sql` files, so this file is not a migration).
//! Compiled into `holdfast-adapters` as `db::constraints`; errors are matched against these
//! constants only, never against string literals.

/// `V2__holds.sql`: no two active exclusive claims of one table overlap (SQLSTATE 23P01).
pub const TABLE_CLAIMS_NO_OVERLAP: &str = "table_claims_no_overlap";

/// `V2__holds.sql`: the primary key `(scope, key)` of `idempotency_keys` (PostgreSQL's
/// default name for it). A unique violation here means a concurrent duplicate request won.
pub const IDEMPOTENCY_KEYS_PKEY: &str = "idempotency_keys_pkey";

#[cfg(test)]
mod tests {
    use super::*;

    const V2: &str = include_str!("V2__holds.sql");

    #[test]
    fn each_named_constraint_is_declared_by_its_migration() {
        assert!(V2.contains(&format!("CONSTRAINT {TABLE_CLAIMS_NO_OVERLAP}\n")), "{TABLE_CLAIMS_NO_OVERLAP}");
        // An implicit primary-key name: PostgreSQL calls it <table>_pkey.
        assert!(V2.contains("CREATE TABLE idempotency_keys (") && V2.contains("PRIMARY KEY (scope, key)"));
        assert_eq!(IDEMPOTENCY_KEYS_PKEY, "idempotency_keys_pkey");
    }
}
